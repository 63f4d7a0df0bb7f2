//! Keys, key managers, CSRs, X.509 and JWT SVID signing and validation
