//! broker mock
