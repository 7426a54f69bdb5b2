//! Vault / OpenBao KV (placeholder: being written).
