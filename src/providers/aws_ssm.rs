//! AWS Systems Manager Parameter Store (placeholder: being written).
