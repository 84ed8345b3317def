//! Data-parallel runs: a run configuration built on several devices, one trainer replica each
//! ([`rocm_trainer::parallel`], docs/scaling.md).

use burn::prelude::Device;

use crate::Backend;
use crate::run::{Adapters, Built, Run, RunConfig, RunError};
use crate::trainer::GradientSync;
use crate::trainer::parallel::{BoxError, Replicas};

impl RunConfig {
    /// Builds the run on `devices` (`--devices`, else `train.devices`; empty: `fallback`, one
    /// device): rank 0 on the first, as [`RunConfig::build`] does, and for two or more a
    /// replica thread per further device that builds the same model, reward and prompts there
    /// ([`Replicas::spawn`]). Each replica samples `train.batch_size` prompts per
    /// micro-batch, so an update sees `batch_size × gradient_accumulation_steps × devices`.
    ///
    /// Errors as [`RunConfig::build`] does, and with the replica's error, naming its rank and
    /// device, when a replica cannot be built.
    pub fn build_replicated(
        &self,
        devices: &[String],
        fallback: &str,
        adapters: Adapters,
    ) -> Result<Built, RunError> {
        let main = devices.first().map_or(fallback, String::as_str);
        let mut built = self.build(main, adapters)?;
        if devices.len() < 2 {
            return Ok(built);
        }
        let (config, names) = (self.clone(), devices.to_vec());
        let build_rank = move |rank: usize| -> Result<Run, BoxError> {
            let device = names.get(rank).map_or("", String::as_str);
            let built = config
                .build(device, Adapters::New)
                .map_err(|e| format!("on `{device}`: {e}"))?;
            Ok(built.run)
        };
        let n = devices.len();
        let all_reduce = self.all_reduce_devices(devices)?;
        let with = move |replicas: Replicas| match &all_reduce {
            Some(d) => replicas.with_all_reduce(d.clone()),
            None => Ok(replicas),
        };
        built.run = match built.run {
            Run::Toy(trainer) => {
                let replicas = Replicas::spawn(n, move |rank| match build_rank(rank)? {
                    Run::Toy(t) => Ok(*t),
                    Run::Pipeline(_) => Err("built a pipeline where rank 0 has the toy".into()),
                })?;
                let replicas = with(replicas)?;
                Run::Toy(Box::new(trainer.with_replicas(replicas)))
            }
            Run::Pipeline(trainer) => {
                let replicas = Replicas::spawn(n, move |rank| match build_rank(rank)? {
                    Run::Pipeline(t) => Ok(*t),
                    Run::Toy(_) => Err("built the toy where rank 0 has a pipeline".into()),
                })?;
                let replicas = with(replicas)?;
                Run::Pipeline(Box::new(trainer.with_replicas(replicas)))
            }
        };
        Ok(built)
    }

    /// The devices of `train.gradient_sync = "nccl"`: every one a CUDA device (a build with
    /// `--features cuda`), or an error naming the first that is not; none for `host`.
    fn all_reduce_devices(&self, devices: &[String]) -> Result<Option<Vec<Device>>, RunError> {
        if self.train.gradient_sync == GradientSync::Host {
            return Ok(None);
        }
        devices
            .iter()
            .map(|name| match crate::select_device(name)? {
                (device, Backend::Cuda) => Ok(device),
                (_, backend) => Err(RunError::from(crate::trainer::Error::InvalidField {
                    field: "gradient_sync",
                    message: format!(
                        "`nccl` all-reduces on CUDA devices only; `{name}` is {backend} (use \
                         `host`)"
                    ),
                })),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
