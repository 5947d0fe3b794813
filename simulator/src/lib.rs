//! Physically grounded blast scenario simulator
