"""Text anchors: class-name embeddings from a text encoder, cached once per encoder and prompt template."""
