"""Fine-tuning the student (`distillery train`)."""
