//! Ports of the diffusers/transformers models that ROCM fine-tunes and decodes with:
//! `UNet2DConditionModel`, the `AutoencoderKL` decoder, the CLIP text (and vision) towers and the
//! CLIP tokenizer, built from Hugging Face model folders and loaded by weight name.
//!
//! The UNet implements [`rocm_sampler::ConsistencyModel`]; its attention projections and
//! convolutions accept [`rocm_lora`] adapters.
