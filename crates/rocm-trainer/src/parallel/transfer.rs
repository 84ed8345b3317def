//! Moving the trainable (adapter) parameters and their gradients between replicas on the host,
//! matched by their position in the module's traversal order: every replica is built by its own
//! call of the factory, so its `ParamId`s differ from the main replica's, but its module tree is
//! the same. On CUDA the gradients can instead be summed in place by Burn's all-reduce (NCCL),
//! rank by rank in the same traversal order.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::distributed::{ReduceOperation, all_reduce};

/// The host values of a module's trainable parameters, in traversal order.
pub(crate) type HostValues = Vec<TensorData>;

/// The host gradient of each trainable parameter, in traversal order (`None`: no gradient).
pub(crate) type HostGrads = Vec<Option<TensorData>>;

struct Values<'a> {
    grads: Option<&'a GradientsParams>,
    values: HostValues,
    grad_values: HostGrads,
}

impl ModuleVisitor for Values<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        match self.grads {
            None => self.values.push(param.val().into_data()),
            Some(grads) => self
                .grad_values
                .push(grads.get::<D>(param.id).map(Tensor::into_data)),
        }
    }
}

/// The values of `module`'s trainable parameters on the host, in traversal order.
pub(crate) fn trainable_values<M: Module>(module: &M) -> HostValues {
    let mut v = Values {
        grads: None,
        values: Vec::new(),
        grad_values: Vec::new(),
    };
    module.visit(&mut v);
    v.values
}

/// The gradients of `module`'s trainable parameters on the host, in traversal order.
pub(crate) fn host_gradients<M: Module>(module: &M, grads: &GradientsParams) -> HostGrads {
    let mut v = Values {
        grads: Some(grads),
        values: Vec::new(),
        grad_values: Vec::new(),
    };
    module.visit(&mut v);
    v.grad_values
}

struct SetValues<'a> {
    values: &'a [TensorData],
    next: usize,
    error: Option<String>,
}

impl ModuleMapper for SetValues<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_require_grad() || self.error.is_some() {
            return param;
        }
        let i = self.next;
        self.next += 1;
        let Some(value) = self.values.get(i) else {
            self.error = Some(format!("more trainable parameters than the {} sent", i));
            return param;
        };
        let dims = param.dims().to_vec();
        if value.shape().to_vec().as_slice() != dims.as_slice() {
            self.error = Some(format!(
                "trainable parameter {i} has shape {dims:?} here, {:?} on the main replica",
                value.shape().to_vec()
            ));
            return param;
        }
        param.map(|t| {
            Tensor::<D>::from_data(value.clone(), &t.device()).set_require_grad(t.is_require_grad())
        })
    }
}

/// `module` with its trainable parameters (in traversal order) set to `values`, ids kept.
///
/// Errors, naming the parameter, when the count or a shape differs.
pub(crate) fn set_trainable_values<M: Module>(
    module: M,
    values: &[TensorData],
) -> Result<M, String> {
    let mut mapper = SetValues {
        values,
        next: 0,
        error: None,
    };
    let module = module.map(&mut mapper);
    if let Some(e) = mapper.error {
        return Err(e);
    }
    if mapper.next != values.len() {
        return Err(format!(
            "{} trainable parameters here, {} on the main replica",
            mapper.next,
            values.len()
        ));
    }
    Ok(module)
}

struct AddGrads<'a> {
    grads: &'a mut GradientsParams,
    host: &'a [Option<TensorData>],
    next: usize,
    error: Option<String>,
}

impl ModuleVisitor for AddGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() || self.error.is_some() {
            return;
        }
        let i = self.next;
        self.next += 1;
        let Some(entry) = self.host.get(i) else {
            self.error = Some(format!("no gradient entry for trainable parameter {i}"));
            return;
        };
        let Some(data) = entry else { return };
        if data.shape().to_vec().as_slice() != param.dims().as_slice() {
            self.error = Some(format!(
                "the gradient of trainable parameter {i} has shape {:?}, the parameter {:?}",
                data.shape().to_vec(),
                param.dims()
            ));
            return;
        }
        let g = Tensor::<D>::from_data(data.clone(), &param.device().inner());
        let sum = match self.grads.remove::<D>(param.id) {
            Some(own) => own + g,
            None => g,
        };
        self.grads.register::<D>(param.id, sum);
    }
}

/// Adds a replica's host gradients (traversal order) into `grads`, the gradients of `module`'s
/// parameters on its device.
///
/// Errors when the count or a shape differs.
pub(crate) fn add_host_gradients<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    host: &[Option<TensorData>],
) -> Result<(), String> {
    let mut v = AddGrads {
        grads,
        host,
        next: 0,
        error: None,
    };
    module.visit(&mut v);
    if let Some(e) = v.error {
        return Err(e);
    }
    if v.next != host.len() {
        return Err(format!(
            "{} gradient entries for {} trainable parameters",
            host.len(),
            v.next
        ));
    }
    Ok(())
}

struct AllReduce<'a> {
    grads: &'a mut GradientsParams,
    devices: &'a [Device],
}

impl ModuleVisitor for AllReduce<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let g = self
            .grads
            .remove::<D>(param.id)
            .unwrap_or_else(|| Tensor::<D>::zeros(param.dims(), &param.device().inner()));
        let sum = all_reduce(g, ReduceOperation::Sum, self.devices.to_vec()).resolve();
        self.grads.register::<D>(param.id, sum);
    }
}

/// Replaces `module`'s trainable gradients by their sum over every rank of `devices`, in place,
/// with Burn's collective all-reduce (NCCL on CUDA). Every rank must call it with the same
/// module tree at the same point; a missing gradient counts as zeros.
///
/// # Panics
/// On backends without collectives (Flex, NdArray, wgpu): Burn 0.22.1 implements `all_reduce`
/// only for CUDA (docs/scaling.md).
pub(crate) fn all_reduce_gradients<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    devices: &[Device],
) {
    module.visit(&mut AllReduce { grads, devices });
}
