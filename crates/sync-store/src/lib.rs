//! placeholder

pub mod partitions;
