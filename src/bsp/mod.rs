//! Board support. Only the Raspberry Pi 2 (BCM2836) is supported.

pub mod raspi2;
