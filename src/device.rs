//! Backend selection: one place that turns `--device NAME` into a Burn [`Device`].
//!
//! Backends are Cargo features of this crate: `flex` (CPU, default), `wgpu` and `cuda`. A backend
//! that was not compiled in is an error that says which feature to enable, never a silent
//! fallback.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

/// A compute backend this crate knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// CPU through burn-flex (SIMD kernels, rayon threads). Feature `flex`.
    Flex,
    /// GPU through wgpu (Vulkan, Metal, DX12, WebGPU). Feature `wgpu`.
    Wgpu,
    /// NVIDIA GPU through CUDA. Feature `cuda`.
    Cuda,
}

impl Backend {
    /// Every backend, fastest first (the order `auto` tries them in).
    pub const ALL: [Backend; 3] = [Backend::Cuda, Backend::Wgpu, Backend::Flex];

    /// The backend's name, as accepted by [`select_device`] and as its Cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this binary was compiled with the backend's Cargo feature.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this binary, fastest first.
    pub fn compiled() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Ok(Backend::Flex),
            "wgpu" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

/// Why a device could not be selected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The name is not a backend this crate knows.
    #[error("unknown device `{0}`: expected auto, flex (or cpu), wgpu, or cuda[:INDEX]")]
    Unknown(String),
    /// The backend exists but its Cargo feature was not enabled at build time.
    #[error(
        "the `{backend}` backend is not compiled into this binary; rebuild with `--features {backend}` \
         (compiled backends: {compiled})"
    )]
    NotCompiled {
        /// The backend that was asked for.
        backend: Backend,
        /// The backends that are available, comma-separated.
        compiled: String,
    },
    /// A device index (`cuda:N`) that is not a number.
    #[error("bad device index in `{0}`: expected e.g. cuda:0")]
    BadIndex(String),
    /// No backend feature at all was enabled.
    #[error("no backend is compiled into this binary; enable one of the features flex, wgpu, cuda")]
    NoneCompiled,
}

/// The device a binary should run on, from a `--device` value.
///
/// Accepted names: `auto` (the fastest compiled backend: cuda, then wgpu, then flex), `flex` or
/// `cpu`, `wgpu`, `cuda` or `cuda:N` (GPU index `N`). The returned device has no autodiff; call
/// `.autodiff()` on it for training.
///
/// # Errors
/// [`DeviceError::NotCompiled`] for a backend whose feature is off, naming the feature to enable;
/// [`DeviceError::Unknown`] / [`DeviceError::BadIndex`] for names that do not parse.
///
/// # Example
/// ```
/// let (device, backend) = rocm::select_device("flex").unwrap();
/// assert_eq!(backend, rocm::Backend::Flex);
/// # let _ = device;
/// let err = rocm::select_device("tpu").unwrap_err();
/// assert!(err.to_string().contains("unknown device `tpu`"));
/// ```
pub fn select_device(name: &str) -> Result<(Device, Backend), DeviceError> {
    let (backend_name, index) = match name.split_once(':') {
        Some((b, i)) => {
            let index = i
                .parse::<usize>()
                .map_err(|_| DeviceError::BadIndex(name.to_string()))?;
            (b, index)
        }
        None => (name, 0),
    };
    let backend = if backend_name.eq_ignore_ascii_case("auto") {
        *Backend::compiled()
            .first()
            .ok_or(DeviceError::NoneCompiled)?
    } else {
        backend_name.parse()?
    };
    if !backend.is_compiled() {
        let compiled = Backend::compiled()
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DeviceError::NotCompiled { backend, compiled });
    }
    Ok((make_device(backend, index), backend))
}

#[allow(unused_variables)] // `index` is unused when only CPU backends are compiled.
fn make_device(backend: Backend, index: usize) -> Device {
    match backend {
        #[cfg(feature = "flex")]
        Backend::Flex => Device::flex(),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => wgpu_device(index),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Device::cuda(index),
        #[allow(unreachable_patterns)]
        _ => unreachable!("select_device checks that {backend} is compiled"),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device(index: usize) -> Device {
    use burn::prelude::DeviceKind;
    if index == 0 {
        Device::wgpu(DeviceKind::DefaultDevice)
    } else {
        Device::wgpu(DeviceKind::DiscreteGpu(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("CPU".parse::<Backend>(), Ok(Backend::Flex));
        assert_eq!("cuda".parse::<Backend>(), Ok(Backend::Cuda));
        assert!(matches!(
            select_device("cuda:x"),
            Err(DeviceError::BadIndex(_))
        ));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_names_its_feature() {
        let err = select_device("cuda:1").unwrap_err();
        assert!(matches!(
            err,
            DeviceError::NotCompiled {
                backend: Backend::Cuda,
                ..
            }
        ));
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_runs_a_tensor_op() {
        use burn::prelude::Tensor;
        let (device, backend) = select_device("flex").unwrap();
        assert_eq!(backend, Backend::Flex);
        let s = Tensor::<1>::ones([3], &device).sum().into_scalar::<f32>();
        assert_eq!(s, 3.0);
    }
}
