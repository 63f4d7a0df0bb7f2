//! Shared CLI plumbing: Go-style flag normalization and output printers
