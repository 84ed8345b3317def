//! The `Autodiff` wiring: one `Backward` per operation, keeping the forward's inputs and calling
//! [`FusedBackward`] on the inner backend.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::{FusedBackward, FusedOps};

/// The backward of SiLU: keeps the input.
#[derive(Debug)]
struct SiluBackward;

impl<B: FusedBackward> Backward<B, 1> for SiluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::fused_silu_backward(ops.state, grad));
        }
    }
}

/// The backward of GroupNorm(+SiLU): keeps the input and the affine parameters.
#[derive(Debug)]
struct GroupNormBackward;

/// Input, γ, β, groups, ε, SiLU.
type GroupNormState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    usize,
    f64,
    bool,
);

impl<B: FusedBackward> Backward<B, 3> for GroupNormBackward {
    type State = GroupNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, groups, epsilon, silu) = ops.state;
        // A frozen UNet's norms: skip the γ/β reductions.
        let affine_grads = gamma_node.is_some() || beta_node.is_some();
        let (dx, dgamma, dbeta) =
            B::fused_group_norm_backward(x, gamma, beta, grad, groups, epsilon, silu, affine_grads);
        if let Some(node) = x_node {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = gamma_node {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = beta_node {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

/// The backward of the 3×3 convolution: keeps the input and the weight.
#[derive(Debug)]
struct Conv3x3Backward;

impl<B: FusedBackward> Backward<B, 2> for Conv3x3Backward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let (dx, dw) =
            B::fused_conv3x3_backward(x, weight, grad, x_node.is_some(), weight_node.is_some());
        if let Some(node) = x_node {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = weight_node {
            grads.register::<B>(node.id, dw);
        }
    }
}

/// The backward of GEGLU: keeps its input.
#[derive(Debug)]
struct GegluBackward;

impl<B: FusedBackward> Backward<B, 1> for GegluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::fused_geglu_backward(ops.state, grad));
        }
    }
}

/// The backward of attention: keeps `q`, `k`, `v` (the probabilities are recomputed).
#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedBackward> Backward<B, 3> for AttentionBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q_node, k_node, v_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (q, k, v, scale) = ops.state;
        let (dq, dk, dv) = B::fused_attention_backward(q, k, v, grad, scale);
        for (node, g) in [(q_node, dq), (k_node, dk), (v_node, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Runs `forward` on the inner backend and, when any of `nodes` is tracked, records `op` with
/// `state` (the forward's inputs, cloned: `Arc`s on Flex) for its backward. Untracked, the inputs
/// move into `forward` uncloned, so a kernel may overwrite an input nobody else holds.
fn record<C, B, O, const N: usize>(
    op: O,
    nodes: [NodeGuard; N],
    state: O::State,
    forward: impl FnOnce(O::State) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: FusedBackward,
    C: CheckpointStrategy,
    O: Backward<B, N>,
{
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let output = forward(state.clone());
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(state)),
    }
}

impl<B: FusedOps + FusedBackward, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node()];
        record::<C, _, _, _>(SiluBackward, nodes, x.into_primitive(), B::fused_silu)
    }

    fn fused_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let state = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            groups,
            epsilon,
            silu,
        );
        record::<C, _, _, _>(
            GroupNormBackward,
            nodes,
            state,
            |(x, gamma, beta, g, e, s)| B::fused_group_norm(x, gamma, beta, g, e, s),
        )
    }

    fn fused_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node()];
        let state = (x.into_primitive(), weight.into_primitive());
        record::<C, _, _, _>(Conv3x3Backward, nodes, state, |(x, weight)| {
            B::fused_conv3x3(x, weight)
        })
    }

    fn fused_geglu(y: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [y.node()];
        record::<C, _, _, _>(GegluBackward, nodes, y.into_primitive(), B::fused_geglu)
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let nodes = [q.node(), k.node(), v.node()];
        let state = (
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            scale,
        );
        record::<C, _, _, _>(AttentionBackward, nodes, state, |(q, k, v, scale)| {
            B::fused_attention(q, k, v, scale)
        })
    }
}
