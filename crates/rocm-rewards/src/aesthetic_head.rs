//! The LAION improved aesthetic predictor head (`sac+logos+ava1-l14-linearMSE.pth`, as used by
//! DDPO, AlignProp and RLCM): an MLP `768 → 1024 → 128 → 64 → 16 → 1` with dropout between the first
//! layers and **no activations**, applied to the L2-normalised CLIP ViT-L/14 image embedding.

use std::path::Path;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{
    ApplyResult, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use crate::Error;

/// The file name of the embedded LAION head (errors name it).
pub const LAION_HEAD_NAME: &str = "sac+logos+ava1-l14-linearMSE.safetensors";

/// The embedded LAION head, a safetensors file (`assets/NOTICE.md`: source and MIT license).
static LAION_HEAD: &[u8] = include_bytes!("../assets/sac+logos+ava1-l14-linearMSE.safetensors");

/// Widths of the head's layers: `768 → 1024 → 128 → 64 → 16 → 1`.
pub const AESTHETIC_WIDTHS: [usize; 6] = [768, 1024, 128, 64, 16, 1];

/// The head. Upstream it is `nn.Sequential(Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear,
/// Linear)` under `layers`, so checkpoint keys are `layers.{0,2,4,6,7}.*`; the loaders renumber them
/// onto the contiguous `layers.{0..4}` of this Vec (burn-store's contiguous index mapping). Dropout is
/// the identity at inference and is not represented.
#[derive(Module, Debug)]
pub struct AestheticHead {
    /// The five Linear layers, in order.
    pub layers: Vec<Linear>,
}

impl AestheticHead {
    /// A freshly initialised head with [`AESTHETIC_WIDTHS`].
    pub fn init(device: &Device) -> Self {
        Self::init_with_widths(&AESTHETIC_WIDTHS, device)
    }

    /// A freshly initialised head `widths[0] → … → widths[n]` (tests use tiny ones).
    pub fn init_with_widths(widths: &[usize], device: &Device) -> Self {
        let layers = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Self { layers }
    }

    /// The LAION head itself (`sac+logos+ava1-l14-linearMSE`, MIT), embedded in this crate
    /// (`assets/`, 3.7 MB): no file or download needed.
    pub fn laion(device: &Device) -> Result<Self, Error> {
        Self::from_safetensors_bytes(LAION_HEAD.to_vec(), device).map_err(|e| match e {
            Error::Weights { message, .. } => Error::Weights {
                path: LAION_HEAD_NAME.into(),
                message,
            },
            other => other,
        })
    }

    /// Loads the head from the bytes of a `.safetensors` file with the upstream keys; strict.
    pub fn from_safetensors_bytes(bytes: Vec<u8>, device: &Device) -> Result<Self, Error> {
        let store =
            SafetensorsStore::from_bytes(Some(bytes)).with_from_adapter(PyTorchToBurnAdapter);
        Self::load(store, device).map_err(|message| Error::Weights {
            path: "<bytes>".into(),
            message,
        })
    }

    /// Loads the head from a `.pth` (PyTorch zip pickle, burn-store's PyTorch reader) or a
    /// `.safetensors` file with the upstream keys; strict (every key used, every layer set).
    pub fn from_file(path: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let path = path.as_ref();
        let error = |message: String| Error::Weights {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(error("no such file".into()));
        }
        if path.extension().is_some_and(|e| e == "safetensors") {
            let store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter);
            Self::load(store, device).map_err(error)
        } else {
            Self::load(PytorchStore::from_file(path), device).map_err(error)
        }
    }

    /// Sizes the layers from the store's weight shapes, then loads every tensor, strictly.
    fn load<S: LayerStore>(store: S, device: &Device) -> Result<Self, String> {
        let mut store = store.map_indices_contiguous(true).allow_partial(true);
        let widths = widths_in(&mut store)?;
        let mut head = Self::init_with_widths(&widths, device);
        let result = head.load_from(&mut store).map_err(|e| e.to_string())?;
        check_complete(&result)?;
        Ok(head)
    }

    /// The raw aesthetic score (about 1–10 on real images).
    ///
    /// # Shapes
    /// - `embeds`: `[batch, 768]`, L2-normalised image embeddings → `[batch]`
    pub fn forward(&self, embeds: Tensor<2>) -> Tensor<1> {
        let out = self.layers.iter().fold(embeds, |x, l| l.forward(x));
        out.squeeze_dim(1)
    }
}

/// The stores the head loads from: burn-store's safetensors and PyTorch readers, which share
/// these builder options without a common trait.
trait LayerStore: ModuleStore {
    fn map_indices_contiguous(self, on: bool) -> Self;
    fn allow_partial(self, on: bool) -> Self;
}

impl LayerStore for SafetensorsStore {
    fn map_indices_contiguous(self, on: bool) -> Self {
        SafetensorsStore::map_indices_contiguous(self, on)
    }
    fn allow_partial(self, on: bool) -> Self {
        SafetensorsStore::allow_partial(self, on)
    }
}

impl LayerStore for PytorchStore {
    fn map_indices_contiguous(self, on: bool) -> Self {
        PytorchStore::map_indices_contiguous(self, on)
    }
    fn allow_partial(self, on: bool) -> Self {
        PytorchStore::allow_partial(self, on)
    }
}

/// The layer widths from the `layers.N.weight` shapes (`[out, in]`) of a store, in index order.
fn widths_in<S: ModuleStore>(store: &mut S) -> Result<Vec<usize>, String> {
    let tensors = store.get_all_tensors().map_err(|e| e.to_string())?;
    let mut layers: Vec<(usize, Vec<usize>)> = tensors
        .iter()
        .filter_map(|(key, t)| {
            let index = key.strip_prefix("layers.")?.strip_suffix(".weight")?;
            Some((index.parse().ok()?, t.shape.to_vec()))
        })
        .collect();
    layers.sort_by_key(|(i, _)| *i);
    let mut widths = Vec::new();
    for (i, shape) in &layers {
        let [out, input] = shape[..] else {
            return Err(format!(
                "layers.{i}.weight has shape {shape:?}, expected [out, in]"
            ));
        };
        if widths.is_empty() {
            widths.push(input);
        }
        if widths.last() != Some(&input) {
            return Err(format!(
                "layers.{i}.weight takes {input} inputs after a layer of {widths:?}"
            ));
        }
        widths.push(out);
    }
    if widths.len() < 2 {
        return Err("no `layers.N.weight` tensors".into());
    }
    Ok(widths)
}

fn check_complete(result: &ApplyResult) -> Result<(), String> {
    if result.missing.is_empty() && result.unused.is_empty() && result.errors.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing {:?}, unused {:?}, errors {:?}",
        result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
        result.unused,
        result.errors
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = AestheticHead::from_file("nope/head.pth", &Device::flex()).expect_err("missing");
        assert!(err.to_string().contains("nope/head.pth"), "{err}");
    }

    #[test]
    fn bytes_that_are_no_head_are_an_error() {
        let err =
            AestheticHead::from_safetensors_bytes(b"not safetensors".to_vec(), &Device::flex())
                .expect_err("junk");
        assert!(err.to_string().contains("<bytes>"), "{err}");
    }

    #[test]
    fn shapes() {
        let device = Device::flex();
        let head = AestheticHead::init(&device);
        assert_eq!(head.forward(Tensor::zeros([3, 768], &device)).dims(), [3]);
    }
}
