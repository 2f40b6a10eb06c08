//! The on-disk formats that both the data pipeline (which writes them) and the student (which
//! reads them) use: the commit protocol of parts and stats markers, parquet frames, latent
//! shards, the pixel and VAE image tokenizers, the vocabulary and T5 text encoders, the
//! crop/resize step. Neither `pipeline` nor `student` is imported from here.

pub mod commit;
pub mod crop;
pub mod frame;
pub mod manifest;
pub mod prompt_rows;
pub mod shards;
pub mod t5;
pub mod text;
pub mod tokenizer;
pub mod vae;
