//! What one render of a chat template may spend. A GGUF file's template is a program from
//! whoever made the file, so it runs with bounds on instructions (minijinja's fuel), call
//! depth, output size, memory and wall-clock time; the sizes grow with the conversation, so
//! the bounds stay generous for every real template whatever the length of the chat.

use std::io;
use std::time::Duration;

/// Instructions a render may execute (minijinja's fuel). Real templates spend 18 to 32 per
/// message (SmolLM2's, Qwen 2.5's, Llama 3 and Mistral shaped ones: the test
/// `real_templates_render_long_chats_within_the_limits`), so this allows chats of over a
/// million messages, and stops two nested `range(100000)` loops in about a second.
pub const FUEL: u64 = 50_000_000;
/// Deepest nesting of macro calls, includes and recursive loops (minijinja's default is 500;
/// real templates nest a few levels).
pub const RECURSION: usize = 100;
/// Output a render may write before its conversation is counted: the template's own text
/// (tokens, instructions, tool descriptions).
const OUTPUT_BASE: usize = 1 << 20;
/// Output per byte of conversation (roles and contents): a template writes each message
/// once, a few write the system prompt twice.
const OUTPUT_PER_INPUT_BYTE: usize = 8;
/// Memory a render may hold on top of the process's, and per byte of conversation.
const MEMORY_BASE: usize = 512 << 20;
const MEMORY_PER_INPUT_BYTE: usize = 32;
/// Wall-clock time of one render; fuel stops loops well before this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest output in bytes.
    pub output_bytes: usize,
    /// Largest address space the render may add to the process's, in bytes.
    pub memory_bytes: usize,
    pub timeout: Duration,
}

impl Limits {
    /// The bounds for a conversation of `input_bytes` (the bytes of its roles and contents).
    pub fn for_input(input_bytes: usize) -> Limits {
        Limits {
            output_bytes: OUTPUT_BASE
                .saturating_add(input_bytes.saturating_mul(OUTPUT_PER_INPUT_BYTE)),
            memory_bytes: MEMORY_BASE
                .saturating_add(input_bytes.saturating_mul(MEMORY_PER_INPUT_BYTE)),
            timeout: TIMEOUT,
        }
    }
}

/// A byte sink that refuses to grow past a limit (the render then fails with a write error,
/// and `exceeded` tells why).
pub struct CappedWriter {
    pub buf: Vec<u8>,
    limit: usize,
    pub exceeded: bool,
}

impl CappedWriter {
    pub fn new(limit: usize) -> CappedWriter {
        CappedWriter {
            buf: Vec::new(),
            limit,
            exceeded: false,
        }
    }
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `n` bytes for people: `512 MiB`, `3 KiB`, `17 bytes`.
pub fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn capped_writer_stops_at_the_limit() {
        let mut w = CappedWriter::new(4);
        assert!(w.write_all(b"abc").is_ok());
        assert!(w.write_all(b"de").is_err());
        assert!(w.exceeded);
        assert_eq!(w.buf, b"abc");
    }

    #[test]
    fn limits_grow_with_the_conversation() {
        let small = Limits::for_input(0);
        let big = Limits::for_input(1 << 20);
        assert_eq!(small.output_bytes, 1 << 20);
        assert_eq!(big.output_bytes, 9 << 20);
        assert!(big.memory_bytes > small.memory_bytes);
        assert_eq!(Limits::for_input(usize::MAX).output_bytes, usize::MAX);
        assert_eq!(human_bytes(512 << 20), "512 MiB");
    }
}
