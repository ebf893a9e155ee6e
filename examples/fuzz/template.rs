//! Hostile chat templates: programs that allocate without end, loop, recurse, call what does
//! not exist or do not parse, rendered through the library's template API with its limits.

use crate::outcome::Outcome;
use crate::rng::Rng;
use fastgen::chat::{ChatMessage, ChatTemplate};

/// A number that makes a template expensive: small to huge.
fn big(rng: &mut Rng) -> u64 {
    *rng.pick(&[
        0,
        1,
        10,
        1000,
        100_000,
        10_000_000,
        1_000_000_000,
        1 << 40,
        u64::MAX >> 1,
    ])
}

const ATOMS: [&str; 24] = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "for",
    "in",
    "endfor",
    "if",
    "endif",
    "macro",
    "endmacro",
    "set",
    "messages",
    "range(",
    ")",
    "|",
    "tojson",
    "*",
    "~",
    "'x'",
    "loop",
    "raise_exception(",
];

/// Template `index` of the run with `seed`.
pub fn generate(seed: u64, index: u64) -> String {
    let mut rng = Rng::for_input(seed, index);
    let n = big(&mut rng);
    let m = big(&mut rng);
    let depth = 1 + rng.below(12);
    match rng.below(16) {
        0 => format!("{{{{ 'x' * {n} }}}}"),
        1 => format!(
            "{{% set s = namespace(v='ab') %}}{{% for i in range({m}) %}}{{% set s.v = s.v ~ s.v %}}{{% endfor %}}{{{{ s.v | length }}}}"
        ),
        2 => format!("{{{{ (messages | tojson) * {n} }}}}"),
        3 => format!(
            "{{% for i in range({n}) %}}{{% for j in range({m}) %}}{{{{ i }}}}{{% endfor %}}{{% endfor %}}"
        ),
        4 => format!(
            "{{% macro f(n) %}}{{{{ f(n + 1) }}}}{{% endmacro %}}{{{{ f({}) }}}}",
            n % 1000
        ),
        5 => "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}".into(),
        6 => {
            let open = "{% for m in messages %}".repeat(depth * 20);
            let close = "{% endfor %}".repeat(depth * 20);
            format!("{open}{{{{ m.content }}}}{close}")
        }
        7 => format!("{{{{ {} }}}}", "(".repeat(depth * 100) + "1" + &")".repeat(depth * 100)),
        8 => format!("{{{{ undefined_{n}.attr[0](1) }}}}{{{{ messages[{m}].content }}}}"),
        9 => format!("{{{{ raise_exception('no\\nway {n}') }}}}"),
        10 => format!("{{{{ range({n}) | list | tojson }}}}"),
        11 => format!("{{{{ ('x' * {}) | tojson | length }}}}", n % 100_000_000),
        12 => {
            // Token soup: keywords and delimiters in random order.
            (0..1 + rng.below(60)).map(|_| *rng.pick(&ATOMS)).collect::<Vec<_>>().join(" ")
        }
        13 => {
            let n = rng.below(200);
            let bytes = rng.bytes(n);
            String::from_utf8_lossy(&bytes).into_owned()
        }
        14 => format!(
            "{{% set x = [1, 2] %}}{{% for i in range({m}) %}}{{% set x = x + x %}}{{% endfor %}}{{{{ x | length }}}}"
        ),
        _ => format!(
            "{{{{ messages[0]['content'].{}() }}}}{{{{ ''.join(['a'] * {n}) }}}}{{{{ 'x'.center({m}) }}}}",
            rng.pick(&["strip", "upper", "title", "split", "items", "nope", "startswith"])
        ),
    }
}

/// Compiles and renders one template with the default limits.
pub fn check(source: &str) -> Outcome {
    let t = match ChatTemplate::new(source, "<s>", "</s>") {
        Ok(t) => t,
        Err(e) => return Outcome::of_error(&e),
    };
    let messages = [ChatMessage::system("be brief"), ChatMessage::user("hello")];
    match t.render(&messages, true) {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::of_error(&e),
    }
}
