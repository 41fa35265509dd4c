"""Everything below the chat model: where weights come from (`models`), sampling, batched decoding with KV and
prefix caches, the shared engine (`SharedPolicy`, one model per (model, device) serving every role in batches)
and the token records each call leaves for tracing."""
