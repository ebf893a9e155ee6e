//! Chat template rendering (GGUF `tokenizer.chat_template`, Jinja via minijinja). STUB (helper "tokenizer").
