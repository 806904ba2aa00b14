//! Which Stable Diffusion generation a model belongs to. The family decides
//! how prompts are encoded (one CLIP, or SDXL's two encoders with a pooled
//! projection and size conditioning) and what embedding files look like.

/// The Stable Diffusion generation of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// CLIP ViT-L text encoder, conv projections.
    Sd1,
    /// OpenCLIP ViT-H text encoder (penultimate layer), linear projections.
    Sd2,
    /// CLIP ViT-L + OpenCLIP ViT-bigG (penultimate layers, concatenated), pooled
    /// projection and size/crop time ids through the UNet's `text_time` embedding.
    Sdxl,
}

impl Family {
    /// A line for `inspect` and error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x (CLIP text encoder)",
            Family::Sd2 => "SD 2.x (OpenCLIP text encoder)",
            Family::Sdxl => "SDXL (CLIP-L + OpenCLIP-G text encoders)",
        }
    }

    /// The short name the status bar shows.
    pub fn short(&self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
        }
    }

    /// The pad token of the family's (first) tokenizer: SD 2.x pads with `!`
    /// (id 0); SDXL's first tokenizer pads with EOS, its second with `!`.
    pub fn pad_token(&self) -> &'static str {
        match self {
            Family::Sd1 | Family::Sdxl => "<|endoftext|>",
            Family::Sd2 => "!",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short())
    }
}
