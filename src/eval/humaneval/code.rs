//! From a model's answer to a program: the code in a chat answer's fenced block, or the
//! function body a plain completion continues with; when an answer is complete (to stop
//! generating early); and the program that tests it. Pure text functions.

/// A fenced block of a chat answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The info string after the opening fence (`python`), possibly empty.
    pub lang: String,
    pub code: String,
    /// Whether a closing fence was seen (a cut-off answer leaves the last block open).
    pub closed: bool,
}

/// Every ``` fenced block of `text`, in order; an unclosed last block runs to the end.
/// Indented fences (inside a list item) have their indentation removed from the code.
pub fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(Block, &str)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let is_fence = trimmed.starts_with("```");
        match (open.take(), is_fence) {
            (None, true) => {
                let block = Block {
                    lang: trimmed.trim_start_matches('`').trim().to_string(),
                    code: String::new(),
                    closed: false,
                };
                open = Some((block, indent));
            }
            (None, false) => {}
            (Some((mut block, _)), true) => {
                block.closed = true;
                blocks.push(block);
            }
            (Some((mut block, fence_indent)), false) => {
                block
                    .code
                    .push_str(line.strip_prefix(fence_indent).unwrap_or(line));
                block.code.push('\n');
                open = Some((block, fence_indent));
            }
        }
    }
    blocks.extend(open.map(|(b, _)| b));
    blocks
}

/// Whether `code` defines `entry_point` at top level.
pub fn defines(code: &str, entry_point: &str) -> bool {
    let head = format!("def {entry_point}(");
    code.lines().any(|l| l.starts_with(&head))
}

/// The code of a chat answer: the first fenced block defining the entry point, else the
/// first Python (or untagged) block, else the first block; with no fence, the whole answer.
/// A `__main__` section (examples, often with wrong expectations) is dropped.
pub fn chat_code(answer: &str, entry_point: &str) -> String {
    let blocks = fenced_blocks(answer);
    let python = |b: &&Block| matches!(b.lang.as_str(), "" | "python" | "python3" | "py");
    let chosen = blocks
        .iter()
        .find(|b| defines(&b.code, entry_point))
        .or_else(|| blocks.iter().find(python))
        .or(blocks.first());
    without_main(chosen.map_or(answer, |b| &b.code)).to_string()
}

/// `code` up to its first top-level `if __name__` line.
fn without_main(code: &str) -> &str {
    let mut at = 0;
    for line in code.split_inclusive('\n') {
        if line.starts_with("if __name__") {
            return &code[..at];
        }
        at += line.len();
    }
    code
}

/// The function body a plain completion of the prompt writes: everything up to the first
/// line that starts in column 0 (the next definition, a `__main__` block, a print), which
/// ends the function. When the prompt does not end its last line, the completion's first
/// line continues it and is kept.
pub fn completion_body<'a>(prompt: &str, completion: &'a str) -> &'a str {
    let mut at = 0;
    for (i, line) in completion.split_inclusive('\n').enumerate() {
        let continues_prompt = i == 0 && !prompt.ends_with('\n');
        if !continues_prompt && line.starts_with(|c: char| !c.is_whitespace()) {
            return &completion[..at];
        }
        at += line.len();
    }
    completion
}

/// Whether an answer so far is complete: a chat answer once a closed block defines the entry
/// point; a completion once a line starts in column 0.
pub fn finished(chat: bool, prompt: &str, entry_point: &str, answer: &str) -> bool {
    if chat {
        fenced_blocks(answer)
            .iter()
            .any(|b| b.closed && defines(&b.code, entry_point))
    } else {
        completion_body(prompt, answer).len() < answer.len()
    }
}

/// The program testing `code` against the problem: the prompt (its imports and helper
/// functions), the code (a full definition replaces the prompt's docstring-only function;
/// anything else continues its body), the problem's `check` and its call on the entry point.
pub fn program(prompt: &str, code: &str, test: &str, entry_point: &str) -> String {
    let sep = if defines(code, entry_point) { "\n" } else { "" };
    format!("{prompt}{sep}{code}\n\n{test}\n\ncheck({entry_point})\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "from typing import List\n\n\ndef add(xs: List[int]) -> int:\n    \"\"\" Sum.\n    >>> add([1, 2])\n    3\n    \"\"\"\n";

    #[test]
    fn fenced_blocks_are_found_with_their_language_and_state() {
        let text =
            "Here:\n```python\ndef f():\n    return 1\n```\nand\n```\nx = 2\n```\nthen\n```py\ny";
        let b = fenced_blocks(text);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[0].lang.as_str(), b[0].code.as_str(), b[0].closed),
            ("python", "def f():\n    return 1\n", true)
        );
        assert_eq!((b[1].lang.as_str(), b[1].code.as_str()), ("", "x = 2\n"));
        assert_eq!(
            (b[2].lang.as_str(), b[2].code.as_str(), b[2].closed),
            ("py", "y\n", false)
        );
        // An indented fence (in a list item) is dedented by the fence's indentation.
        let b = fenced_blocks("1. Code:\n   ```python\n   def f():\n       pass\n   ```\n");
        assert_eq!(b[0].code, "def f():\n    pass\n");
        assert!(fenced_blocks("no fences here").is_empty());
    }

    #[test]
    fn chat_code_prefers_the_block_defining_the_entry_point() {
        let answer = "Usage:\n```python\nprint(add([1]))\n```\nSolution:\n```python\ndef add(xs):\n    return sum(xs)\n```\n";
        assert_eq!(
            chat_code(answer, "add"),
            "def add(xs):\n    return sum(xs)\n"
        );
        // Without such a block, the first Python block; a shell block is passed over.
        let answer = "```bash\npip install x\n```\n```python\nreturn sum(xs)\n```";
        assert_eq!(chat_code(answer, "add"), "return sum(xs)\n");
        // Unfenced: the whole answer.
        let answer = "def add(xs):\n    return sum(xs)\n";
        assert_eq!(chat_code(answer, "add"), answer);
        // A cut-off answer keeps its open block.
        assert_eq!(
            chat_code("```python\ndef add(xs):\n    return su", "add"),
            "def add(xs):\n    return su\n"
        );
    }

    #[test]
    fn chat_code_drops_the_main_section() {
        let answer = "```python\ndef add(xs):\n    return sum(xs)\n\nif __name__ == \"__main__\":\n    assert add([1]) == 5\n```";
        assert_eq!(
            chat_code(answer, "add"),
            "def add(xs):\n    return sum(xs)\n\n"
        );
    }

    #[test]
    fn a_completion_ends_at_the_first_line_in_column_zero() {
        let body = "    return sum(xs)\n\n    # unreachable\n";
        let completion = format!("{body}\n\ndef other():\n    pass\n");
        assert_eq!(completion_body(PROMPT, &completion), format!("{body}\n\n"));
        assert_eq!(completion_body(PROMPT, body), body);
        assert_eq!(completion_body(PROMPT, "print(1)\n"), "");
        // A prompt ending mid-line: the first line of the completion finishes it.
        assert_eq!(
            completion_body("def f(", "x):\n    return x\nf(1)"),
            "x):\n    return x\n"
        );
    }

    #[test]
    fn answers_are_finished_when_their_code_is_complete() {
        assert!(!finished(
            true,
            PROMPT,
            "add",
            "```python\ndef add(xs):\n    return 1\n"
        ));
        assert!(finished(
            true,
            PROMPT,
            "add",
            "```python\ndef add(xs):\n    return 1\n```"
        ));
        assert!(!finished(
            true,
            PROMPT,
            "add",
            "```python\ndef other():\n    pass\n```"
        ));
        assert!(!finished(false, PROMPT, "add", "    return sum(xs)\n\n"));
        assert!(finished(false, PROMPT, "add", "    return sum(xs)\n\nd"));
    }

    #[test]
    fn programs_replace_or_continue_the_prompt_function() {
        let test = "def check(candidate):\n    assert candidate([1, 2]) == 3";
        let full = program(PROMPT, "def add(xs):\n    return sum(xs)\n", test, "add");
        assert!(full.starts_with(PROMPT));
        assert!(full.contains("\"\"\"\n\ndef add(xs):\n    return sum(xs)\n"));
        assert!(full.ends_with("    assert candidate([1, 2]) == 3\n\ncheck(add)\n"));
        let body = program(PROMPT, "    return sum(xs)\n", test, "add");
        assert!(body.contains("    \"\"\"\n    return sum(xs)\n"));
        // A nested function of the same name is not a top-level definition.
        assert!(!defines("    def add(x):\n", "add"));
        assert!(!defines("def addition(x):\n", "add"));
    }
}
