//! The evaluation on the real model (SmolLM2): the full cache against itself is exactly the
//! full cache; needle haystacks land at the requested length and depth by the model's own
//! tokenizer; a tiny sweep runs end to end, writing its report and plots, and another runs
//! only HumanEval and long generation, the yardsticks left out shown as not run; long generation
//! runs to its forced length with the compressed cache's accounting sampled on the way; and
//! on Qwen2.5-Coder, two HumanEval completions stop at the end of the function body and pass.

use fastgen::chat::ChatTemplate;
use fastgen::compress::{KvKind, KvSettings};
use fastgen::eval::fidelity::{compare_arms, Windows};
use fastgen::eval::niah::{self, FACT, NEEDLE, NEEDLE_QUESTION};
use fastgen::eval::sweep::{self, SweepConfig, Task};
use fastgen::eval::{data, longgen, needle, tasks, Engine};
use fastgen::kv_cache::KvDtype;
use fastgen::model::{Model, Workspace};
use fastgen::tokenizer::Tokenizer;
use indicatif::ProgressBar;

struct Loaded {
    model: Model,
    tok: Tokenizer,
    template: Option<ChatTemplate>,
}

fn load() -> Loaded {
    let path = fastgen::fetch::ensure_model("smollm2").expect("model fetch");
    let model = Model::load(&path).expect("model loads");
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let template = ChatTemplate::from_gguf(model.gguf()).unwrap();
    Loaded {
        model,
        tok,
        template,
    }
}

fn engine(l: &Loaded) -> Engine<'_> {
    Engine::new(&l.model, &l.tok, l.template.as_ref(), KvDtype::F16)
}

fn essay_tokens(e: &Engine) -> Vec<u32> {
    e.encode(&fastgen::fetch::essay_text("worked.txt").unwrap())
        .unwrap()
}

#[test]
fn full_cache_against_itself_has_exactly_zero_kld() {
    let l = load();
    let e = engine(&l);
    let tokens = essay_tokens(&e);
    let w = Windows {
        ctx: 200,
        eval: 24,
        max_windows: 2,
    };
    let full = KvSettings::with_kind(KvKind::Full);
    let fid = compare_arms(&e, &tokens, w, &[full], &ProgressBar::hidden()).unwrap();
    let s = fid[0].summary().unwrap();
    assert_eq!(s.n, 48);
    assert!(fid[0].rows.iter().all(|r| r.kld == 0.0 && r.same_top));
    assert_eq!((s.mean_kld, s.kld_max, s.same_top), (0.0, 0.0, 1.0));
    assert_eq!(s.ppl_full, s.ppl_kv);
    assert_eq!(fid[0].pruned_ratio, 0.0);
    // A real compression on the same windows does change the distributions.
    let fg = KvSettings::default().with(|s| {
        s.fastgen.recovery = 0.9;
        s.fastgen.compress_from = 0;
    });
    let fid = compare_arms(&e, &tokens, w, &[fg], &ProgressBar::hidden()).unwrap();
    assert!(fid[0].summary().unwrap().mean_kld > 0.0);
    assert!(fid[0].pruned_ratio > 0.0);
}

#[test]
fn haystacks_land_at_length_and_depth_by_the_model_tokenizer() {
    let l = load();
    let prose = data::essays().unwrap();
    let count = |s: &str| l.tok.encode(s).unwrap().len();
    for target in [1024, 2048] {
        for depth in [0.0, 25.0, 50.0, 75.0, 100.0] {
            let h = niah::build(&prose, target, &[(NEEDLE, depth), (FACT, 60.0)], &count);
            let dev = (h.tokens as f64 - target as f64).abs() / target as f64;
            assert!(dev <= 0.01, "target {target}: {} tokens", h.tokens);
            assert_eq!(h.tokens, count(&h.text));
            assert_eq!(h.text.matches(NEEDLE).count(), 1);
            // Within one sentence: the longest sentence of the haystack, as a share.
            let longest = niah::sentences(&h.text)
                .iter()
                .map(|s| count(s))
                .max()
                .unwrap();
            let off = (h.depths[0] - depth / 100.0).abs();
            assert!(
                off <= longest as f64 / h.tokens as f64,
                "target {target} depth {depth}: needle at {:.3}",
                h.depths[0]
            );
        }
    }
}

#[test]
fn needle_prompt_holds_the_facts_before_the_question() {
    let l = load();
    let e = engine(&l);
    let p = needle::prompt(&e, &data::essays().unwrap(), 512, 50.0).unwrap();
    let ctx = l.tok.decode(&p.context);
    assert!(ctx.contains(NEEDLE) && ctx.contains(FACT));
    assert!(!ctx.contains(NEEDLE_QUESTION));
    assert!(l.tok.decode(&p.questions[0]).contains(NEEDLE_QUESTION));
    assert!(p.context.len() > 512 && p.context.len() < 600);
    // Lengths beyond the context are an error, not a panic.
    assert!(needle::prompt(&e, "Short. Text.", 1_000_000, 50.0).is_err());
    assert!(needle::prompt(&e, "Short. Text.", 100, 150.0).is_err());
}

#[test]
fn quick_sweep_runs_end_to_end() {
    let l = load();
    let e = engine(&l);
    let tokens = essay_tokens(&e);
    let cfg = SweepConfig {
        recoveries: vec![0.9, 0.99],
        windows: Windows {
            ctx: 160,
            eval: 16,
            max_windows: 1,
        },
        niah_lengths: vec![200],
        niah_depths: vec![50.0],
        niah_max_answer: 6,
        agree_n: 2,
        agree_max_tokens: 6,
        gsm8k_n: 1,
        gsm8k_max_tokens: 6,
        tasks: vec![Task::Niah, Task::Agree, Task::Gsm8k],
        ..SweepConfig::quick(KvSettings::default())
    };
    let prose = data::essays().unwrap();
    let results = sweep::run(&e, &cfg, None, &tokens, &prose, &hidden).unwrap();
    let methods: Vec<&str> = results.iter().map(|r| r.arm.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "full",
            "fastgen",
            "fastgen",
            "fastgen-paper",
            "fastgen-paper",
            "window",
            "h2o",
            "snapkv",
            "adakv",
            "window",
            "h2o",
            "snapkv",
            "adakv"
        ]
    );
    assert_eq!(results[0].kld.mean_kld, 0.0);
    assert_eq!(results[0].agree.unwrap().exact_match, 1.0);
    for r in &results {
        assert!(r.niah.is_some() && r.agree.is_some() && r.gsm8k.is_some());
        assert!(r.humaneval.is_none() && r.longgen.is_none());
    }
    // Baselines hold about FastGen's budget at their T; SnapKV and Ada-KV keep that share
    // of the prompt and every decoded token, so they keep a little more.
    for (i, fg) in [(5, &results[1]), (9, &results[2])] {
        let kept = 1.0 - fg.fidelity.pruned_ratio;
        for b in &results[i..i + 4] {
            assert_eq!(b.arm.recovery, fg.arm.recovery);
            let b_kept = 1.0 - b.fidelity.pruned_ratio;
            assert!(
                (b_kept - kept).abs() < 0.1,
                "{} keeps {b_kept:.3}, fastgen {kept:.3}",
                b.arm.method
            );
            if b.arm.settings.is_snap() {
                assert!(b_kept >= kept - 0.01, "{}: {b_kept:.3}", b.arm.method);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("fastgen-sweep-{}", std::process::id()));
    let files = sweep::write_outputs(&e, &dir, "smollm2", &cfg, &results, &tokens).unwrap();
    for f in ["results.json", "report.md", "quality.svg", "policy-map.svg"] {
        assert!(files.iter().any(|g| g == f), "{f} missing from {files:?}");
        assert!(dir.join(f).metadata().unwrap().len() > 100, "{f} is empty");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["arms"].as_array().unwrap().len(), 13);
    assert_eq!(doc["arms"][0]["ppl"]["mean_kld"], 0.0);
    assert_eq!(doc["arms"][0]["gsm8k"]["n"], 1);
    assert!(doc["arms"][0]["humaneval"].is_null() && doc["arms"][0]["longgen"].is_null());
    assert!(!files
        .iter()
        .any(|f| f.starts_with("humaneval") || f.starts_with("longgen")));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| arm | T | KV MiB | pruned %"));
    assert_eq!(md.matches("\n| fastgen |").count(), 2);
    assert_eq!(md.matches("\n| fastgen-paper |").count(), 2);
    assert!(md.contains("Not run: humaneval, longgen"), "{md}");
    for col in ["HumanEval", "longgen ROUGE-L"] {
        assert!(column(&md, col).iter().all(|c| c == "-"), "{col}: {md}");
    }
    assert!(column(&md, "NIAH hits").iter().all(|c| c.ends_with("/2")));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn hidden(_: &str, _: u64) -> ProgressBar {
    ProgressBar::hidden()
}

/// The cells of the report table's column `name`, one per arm (every row as wide as the
/// header).
fn column(md: &str, name: &str) -> Vec<String> {
    let cells = |l: &str| -> Vec<String> {
        let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };
    let mut rows = md.lines().filter(|l| l.starts_with("| "));
    let header = cells(rows.next().expect("a table"));
    let i = header.iter().position(|h| h == name).expect("the column");
    rows.map(|l| {
        let c = cells(l);
        assert_eq!(c.len(), header.len(), "{l}");
        c[i].clone()
    })
    .collect()
}

#[test]
fn sweep_of_humaneval_and_longgen_alone() {
    let l = load();
    let e = engine(&l);
    let tokens = essay_tokens(&e);
    let cfg = SweepConfig {
        recoveries: vec![0.9],
        with_paper: false,
        windows: Windows {
            ctx: 160,
            eval: 16,
            max_windows: 1,
        },
        tasks: vec![Task::Humaneval, Task::Longgen],
        humaneval_n: 2,
        humaneval_max_tokens: 16,
        longgen_n: 1,
        longgen_tokens: 32,
        ..SweepConfig::quick(KvSettings::default())
    };
    let prose = data::essays().unwrap();
    // HumanEval without a sandbox stops before any arm runs.
    let e_none = sweep::run(&e, &cfg, None, &tokens, &prose, &hidden).unwrap_err();
    assert!(e_none.to_string().contains("sandbox"), "{e_none}");
    let sb = sweep::sandbox(&cfg)
        .unwrap()
        .expect("built when humaneval runs");
    let results = sweep::run(&e, &cfg, Some(&sb), &tokens, &prose, &hidden).unwrap();
    let methods: Vec<&str> = results.iter().map(|r| r.arm.method.as_str()).collect();
    assert_eq!(
        methods,
        ["full", "fastgen", "window", "h2o", "snapkv", "adakv"]
    );
    for r in &results {
        assert!(r.niah.is_none() && r.agree.is_none() && r.gsm8k.is_none());
        let h = r.humaneval.as_ref().expect("humaneval ran");
        assert_eq!(h.n, 2);
        assert!(h.solved <= 2 && h.pass_at_1 == h.solved as f64 / 2.0);
        assert!(h.kept_mean > 0.0 && h.kept_mean <= 1.0, "{h:?}");
        let g = r.longgen.as_ref().expect("longgen ran");
        assert_eq!(g.n, 1);
        let kept = 1.0 - g.pruned_end();
        assert!(kept > 0.0 && kept <= 1.0, "{}: {kept}", r.arm.method);
    }
    // The full arm is the reference: its answers are its own.
    let (h, g) = (
        results[0].humaneval.as_ref().unwrap(),
        results[0].longgen.as_ref().unwrap(),
    );
    assert_eq!((h.identical, h.kept_mean), (2, 1.0));
    assert!(h.full_only.is_empty() && h.arm_only.is_empty());
    assert_eq!((g.identical, g.rouge_l, g.distinct4_ratio), (1, 1.0, 1.0));
    assert_eq!(g.pruned_end(), 0.0);
    // FastGen compresses from the first token, so it keeps less on both.
    let fg = &results[1];
    assert!(fg.humaneval.as_ref().unwrap().kept_mean < 1.0);
    assert!(fg.longgen.as_ref().unwrap().pruned_end() > 0.0);

    let dir = std::env::temp_dir().join(format!("fastgen-sweep-gen-{}", std::process::id()));
    let files = sweep::write_outputs(&e, &dir, "smollm2", &cfg, &results, &tokens).unwrap();
    for f in [
        "humaneval.svg",
        "humaneval.png",
        "longgen.svg",
        "longgen.png",
    ] {
        assert!(files.iter().any(|g| g == f), "{f} missing from {files:?}");
    }
    let svg = std::fs::read_to_string(dir.join("humaneval.svg")).unwrap();
    assert!(svg.contains("HumanEval pass@1 against kept fraction"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        doc["config"]["tasks"],
        serde_json::json!(["ppl", "humaneval", "longgen"])
    );
    for arm in doc["arms"].as_array().unwrap() {
        for k in ["solved", "n", "pass_at_1", "kept_mean"] {
            assert!(arm["humaneval"][k].is_number(), "humaneval.{k}: {arm}");
        }
        for k in ["pruned_end", "distinct4_ratio", "rouge_l", "identical", "n"] {
            assert!(arm["longgen"][k].is_number(), "longgen.{k}: {arm}");
        }
        for k in ["niah", "agree", "gsm8k"] {
            assert!(arm[k].is_null(), "{k} should be null: {arm}");
        }
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("Not run: niah, agree, gsm8k"), "{md}");
    for col in ["NIAH hits", "exact match %", "GSM8K"] {
        assert!(column(&md, col).iter().all(|c| c == "-"), "{col}: {md}");
    }
    assert_eq!(column(&md, "HumanEval")[0], format!("{}/2", h.solved));
    assert_eq!(column(&md, "longgen identical")[0], "1/1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn longgen_masks_the_end_and_samples_the_compressed_cache() {
    let l = load();
    let e = engine(&l);
    let prompt = l
        .tok
        .encode(
            &e.chat_text("Answer with one word: what color is the sky?")
                .unwrap(),
        )
        .unwrap();
    let tokens = 130;
    let mut ws = Workspace::default();
    let full = KvSettings::with_kind(KvKind::Full);
    // Unmasked, the model ends its answer early...
    let short = tasks::greedy_answer(&e, &mut ws, &full, &prompt, tokens).unwrap();
    assert!(
        short.len() < 20,
        "{} tokens: {:?}",
        short.len(),
        l.tok.decode(&short)
    );
    // ...masked, it runs to the forced length without an end-of-generation token, and the
    // masked run starts as the unmasked one did.
    let pb = ProgressBar::hidden();
    let f = longgen::generate(&e, &mut ws, &full, &prompt, tokens, &pb).unwrap();
    assert_eq!(f.ids.len(), tokens);
    assert!(f.ids.iter().all(|&id| !l.tok.is_eog(id)));
    assert_eq!(&f.ids[..short.len()], &short[..]);
    let generated: Vec<usize> = f.pruned.iter().map(|s| s.generated).collect();
    assert_eq!(generated, [128, 130]);
    assert!(f.pruned.iter().all(|s| s.pruned_ratio == 0.0));
    // The full cache reserved exactly prompt + answer.
    let cfg = &l.model.cfg;
    let full_bytes = 2 * (prompt.len() + tokens) * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2;
    assert_eq!(f.kv_bytes_allocated, full_bytes);

    // Compression forced from the prompt on (the default keeps so short a sequence whole).
    let forced = KvSettings::default().with(|s| s.fastgen.compress_from = 0);
    let k = longgen::generate(&e, &mut ws, &forced, &prompt, tokens, &pb).unwrap();
    assert_eq!(k.ids.len(), tokens);
    assert!(k.pruned.iter().all(|s| s.pruned_ratio > 0.0));
    assert!(k.kv_bytes_allocated < f.kv_bytes_allocated);
    assert_eq!(pb.position(), 2 * tokens as u64);
}

#[test]
fn humaneval_completions_stop_after_the_body_and_pass_their_tests() {
    use fastgen::eval::humaneval::{self as he, sandbox};
    let path = fastgen::fetch::ensure_model("qwen2.5-0.5b").expect("model fetch");
    let model = Model::load(&path).expect("model loads");
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let e = Engine::new(&model, &tok, None, KvDtype::F16);
    // strlen and flip_case: one-line bodies the model writes in a few tokens.
    let all = he::problems(164).unwrap();
    let problems = [all[23].clone(), all[27].clone()];
    let full = KvSettings::with_kind(KvKind::Full);
    let pb = ProgressBar::hidden();
    let answers = he::answers(&e, &full, &problems, he::Format::Raw, 32, &pb).unwrap();
    for a in &answers {
        // Stopped by the first line in column 0, well before the limit.
        assert!(a.tokens < 32, "{a:?}");
        assert!(!a.text.trim().is_empty());
    }
    let sb = sandbox::Sandbox::new(sandbox::Limits::default()).unwrap();
    let attempts = he::check(&sb, &problems, he::Format::Raw, &answers, &pb).unwrap();
    for (p, t) in problems.iter().zip(&attempts) {
        assert!(t.passed, "{}: {} in {:?}", p.task_id, t.reason, t.code);
        assert!(t.code.trim_start().starts_with("return"), "{:?}", t.code);
    }
}
