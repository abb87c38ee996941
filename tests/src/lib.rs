//! End-to-end story tests and the demo for the FixMyPrint kit.
