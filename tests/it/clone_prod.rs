use crate::harness;
