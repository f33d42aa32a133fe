//! Architecture-specific code. Only ARMv7-A (AArch32) is supported.

pub mod arm;
