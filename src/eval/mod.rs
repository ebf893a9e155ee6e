//! Evaluation: how much a compressed KV cache changes what the model says.

pub mod data;
pub mod metrics;
pub mod niah;
