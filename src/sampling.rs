//! Sampling from logits. STUB: API contract only (helper "fetch").
