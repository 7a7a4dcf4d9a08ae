// Each test target uses only part of these helpers.
#![allow(dead_code)]

pub mod load;
pub mod milter;
pub mod mta;
pub mod raw;
pub mod smtp;
