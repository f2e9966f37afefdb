"""Data that several experiments read: the Multi30k tfds builder, tokenisers, length bucketing."""
