//! Low-rank adapters (LoRA) on the frozen linear layers, and the scope in
//! which they apply.
//!
//! A LoRA layer adds `scale · up(down(x))` to a linear layer's output, with
//! `down [r, in]`, `up [out, r]` and `scale = alpha / r` (kohya's and peft's
//! convention). The base weights stay frozen and keep their input-only
//! gradient ops (module `frozen`); only the adapters' own tensors get
//! gradients, through candle's ordinary matmul.
//!
//! DreamArtist++ needs two adapter sets in *one* UNet call: the negative set
//! acts on the batch's first half (the unconditional / negative branch of
//! `[z_t, z_t]`) and the positive set on its second half. Which adapters
//! apply, at what strength and to which rows is a [`Scope`], entered for the
//! current thread with [`enter`] around a model call. Every `Linear` layer
//! knows its place in the model (a [`LayerKey`]: network and diffusers path)
//! and asks the scope for its adapters. A scope instead of new arguments: the
//! model's forward signatures stay those of inference, adapters attach to any
//! linear layer without each block knowing about them (as peft patches
//! modules), and with no scope entered a forward costs one thread-local read.
//! Activation recompute (module `checkpoint`) captures the scope of the
//! forward and enters it again when it recomputes in backward; the adapter
//! gradients found there go to the scope's side store ([`Scope::side_grads`]),
//! since a recomputed segment can only hand candle its inputs' gradients.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, TensorId};

use crate::rng::Rng;

/// The network a linear layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Net {
    Unet,
    /// The (first) CLIP text encoder.
    TextEncoder,
    /// SDXL's second text encoder (OpenCLIP-G).
    TextEncoder2,
}

impl Net {
    /// The network of a weights component label (`"UNet"`, `"text encoder"`,
    /// `"text encoder 2"`); other components (the VAE) take no adapters.
    pub fn of_component(component: &str) -> Option<Net> {
        match component {
            "UNet" => Some(Net::Unet),
            "text encoder" => Some(Net::TextEncoder),
            "text encoder 2" => Some(Net::TextEncoder2),
            _ => None,
        }
    }

    pub fn is_text_encoder(self) -> bool {
        !matches!(self, Net::Unet)
    }
}

/// Where a linear layer sits: its network and its diffusers path
/// (`down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k`,
/// `text_model.encoder.layers.3.self_attn.q_proj`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerKey {
    pub net: Net,
    pub path: String,
}

impl LayerKey {
    pub fn new(net: Net, path: impl Into<String>) -> Self {
        Self {
            net,
            path: path.into(),
        }
    }
}

/// What kind of layer a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    Linear,
    /// A 1×1 convolution (SD 1.x's transformer `proj_in`/`proj_out`): a
    /// linear map over channels, stored by kohya as `[r, in, 1, 1]`.
    Conv1x1,
}

/// A layer an adapter can attach to, with its widths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSite {
    pub key: LayerKey,
    pub in_dim: usize,
    pub out_dim: usize,
    pub kind: SiteKind,
}

/// Which linear layers get adapters (the concept option `lora_targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// The UNet's attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`).
    pub attention: bool,
    /// The UNet transformer blocks' feed-forward (`ff.net.0.proj`, `ff.net.2`).
    pub feed_forward: bool,
    /// The text encoders' attention and MLP (`q/k/v/out_proj`, `fc1`, `fc2`).
    pub text_encoder: bool,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            attention: true,
            feed_forward: false,
            text_encoder: false,
        }
    }
}

impl Targets {
    /// Whether the layer at `key` is one of the targets.
    pub fn covers(&self, key: &LayerKey) -> bool {
        let last = |suffixes: &[&str]| suffixes.iter().any(|s| key.path.ends_with(s));
        match key.net {
            Net::Unet => {
                let in_transformer = key.path.contains(".transformer_blocks.");
                let attention = (key.path.contains(".attn1.") || key.path.contains(".attn2."))
                    && last(&[".to_q", ".to_k", ".to_v", ".to_out.0"]);
                let ff = last(&[".ff.net.0.proj", ".ff.net.2"]);
                in_transformer && ((self.attention && attention) || (self.feed_forward && ff))
            }
            Net::TextEncoder | Net::TextEncoder2 => {
                self.text_encoder
                    && key.path.contains(".encoder.layers.")
                    && last(&[
                        ".self_attn.q_proj",
                        ".self_attn.k_proj",
                        ".self_attn.v_proj",
                        ".self_attn.out_proj",
                        ".mlp.fc1",
                        ".mlp.fc2",
                    ])
            }
        }
    }
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.attention {
            parts.push("attn");
        }
        if self.feed_forward {
            parts.push("ff");
        }
        if self.text_encoder {
            parts.push("te");
        }
        f.write_str(&parts.join(","))
    }
}

impl std::str::FromStr for Targets {
    type Err = String;

    /// A comma list of `attn`, `ff`, `te` (`"attn,ff"`); at least one.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut t = Targets {
            attention: false,
            feed_forward: false,
            text_encoder: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "attn" => t.attention = true,
                "ff" => t.feed_forward = true,
                "te" => t.text_encoder = true,
                other => {
                    return Err(format!(
                        "unknown LoRA target `{other}`: use a comma list of attn, ff, te"
                    ))
                }
            }
        }
        if !(t.attention || t.feed_forward || t.text_encoder) {
            return Err("no LoRA target: use a comma list of attn, ff, te".into());
        }
        Ok(t)
    }
}

/// One adapter: `y += strength · alpha / rank · x downᵀ upᵀ`.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// `[rank, in]`.
    pub down: Tensor,
    /// `[out, rank]`.
    pub up: Tensor,
    pub alpha: f64,
}

impl LoraLayer {
    pub fn rank(&self) -> usize {
        self.down.dims().first().copied().unwrap_or(0)
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank().max(1) as f64
    }

    /// The adapter's contribution for `x` (`[..., in]`), in `x`'s dtype.
    pub fn delta(&self, x: &Tensor, strength: f64) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        let n = x.elem_count() / k.max(1);
        let x2 = x.contiguous()?.reshape((n, k))?;
        let down = self.down.to_dtype(x.dtype())?;
        let up = self.up.to_dtype(x.dtype())?;
        let h = x2.matmul(&down.t()?)?;
        let y = h.matmul(&up.t()?)?;
        let y = (y * (self.scale() * strength))?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.up.dim(0)?;
        }
        y.reshape(out)
    }
}

/// A set of adapters, one per covered layer: one LoRA network (a kohya
/// file's content).
#[derive(Debug, Clone, Default)]
pub struct LoraNetwork {
    layers: BTreeMap<LayerKey, LoraLayer>,
}

impl LoraNetwork {
    pub fn new(layers: BTreeMap<LayerKey, LoraLayer>) -> Self {
        Self { layers }
    }

    /// Fresh adapters on `sites` as kohya and peft start them: `down`
    /// Kaiming-uniform (`a = √5`, so bounds `±1/√in`), `up` zero (the network
    /// starts as the identity), drawn in `sites`' order from `rng`, in f32.
    pub fn init(
        sites: &[LinearSite],
        rank: usize,
        alpha: f64,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        if rank == 0 {
            candle_core::bail!("LoRA rank must be at least 1");
        }
        let mut layers = BTreeMap::new();
        for site in sites {
            let bound = 1.0 / (site.in_dim.max(1) as f64).sqrt();
            let values: Vec<f32> = (0..rank * site.in_dim)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            let down = Tensor::from_vec(values, (rank, site.in_dim), device)?;
            let up = Tensor::zeros((site.out_dim, rank), DType::F32, device)?;
            layers.insert(site.key.clone(), LoraLayer { down, up, alpha });
        }
        Ok(Self { layers })
    }

    pub fn get(&self, key: &LayerKey) -> Option<&LoraLayer> {
        self.layers.get(key)
    }

    pub fn layers(&self) -> impl Iterator<Item = (&LayerKey, &LoraLayer)> {
        self.layers.iter()
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The rank shared by the layers (the first layer's; files with mixed
    /// ranks are valid and each layer uses its own).
    pub fn rank(&self) -> Option<usize> {
        self.layers.values().next().map(LoraLayer::rank)
    }

    pub fn alpha(&self) -> Option<f64> {
        self.layers.values().next().map(|l| l.alpha)
    }

    /// Every tensor of the network (downs and ups), in key order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.layers
            .values()
            .flat_map(|l| [&l.down, &l.up])
            .collect()
    }

    /// The same network with every tensor mapped (to a device, a dtype, a
    /// `Var`'s tensor).
    pub fn map_tensors(&self, mut f: impl FnMut(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for (k, l) in &self.layers {
            layers.insert(
                k.clone(),
                LoraLayer {
                    down: f(&l.down)?,
                    up: f(&l.up)?,
                    alpha: l.alpha,
                },
            );
        }
        Ok(Self { layers })
    }
}

/// Which rows of the batch an adapter set acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    All,
    /// The first half: the negative / unconditional branch of a CFG batch.
    FirstHalf,
    /// The second half: the positive / conditional branch.
    SecondHalf,
}

/// A network applied at a strength to some rows.
#[derive(Debug, Clone)]
pub struct Applied {
    pub network: Arc<LoraNetwork>,
    pub strength: f64,
    pub rows: Rows,
}

/// The adapters in force for the model calls made while it is entered.
#[derive(Debug, Default)]
pub struct Scope {
    applied: Vec<Applied>,
    /// Tensors that train (their ids), whose gradients found by a
    /// recomputed segment are kept in `side`.
    trainable: Vec<Tensor>,
    side: Mutex<HashMap<TensorId, Tensor>>,
}

impl Scope {
    pub fn new(applied: Vec<Applied>) -> Self {
        Self {
            applied,
            ..Default::default()
        }
    }

    /// A scope whose adapter tensors `trainable` (the `Var`s' tensors) get
    /// gradients; see [`Scope::add_side_grads`].
    pub fn training(applied: Vec<Applied>, trainable: Vec<Tensor>) -> Self {
        Self {
            applied,
            trainable,
            side: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }

    /// Whether any network in force has an adapter at `key`.
    fn covers(&self, key: &LayerKey) -> bool {
        self.applied.iter().any(|a| a.network.get(key).is_some())
    }

    /// Adds `base`'s adapters' contributions for the layer at `key`.
    fn adapt(&self, key: &LayerKey, x: &Tensor, base: Tensor) -> Result<Tensor> {
        let mine: Vec<(&LoraLayer, f64, Rows)> = self
            .applied
            .iter()
            .filter(|a| a.strength != 0.0)
            .filter_map(|a| a.network.get(key).map(|l| (l, a.strength, a.rows)))
            .collect();
        if mine.is_empty() {
            return Ok(base);
        }
        let sum = |x: &Tensor, pick: &dyn Fn(Rows) -> bool| -> Result<Option<Tensor>> {
            let mut acc: Option<Tensor> = None;
            for (layer, strength, rows) in &mine {
                if pick(*rows) {
                    let d = layer.delta(x, *strength)?;
                    acc = Some(match acc {
                        Some(a) => (a + d)?,
                        None => d,
                    });
                }
            }
            Ok(acc)
        };
        if mine.iter().all(|(_, _, r)| *r == Rows::All) {
            return match sum(x, &|_| true)? {
                Some(d) => {
                    let d = d.to_dtype(base.dtype())?;
                    base + d
                }
                None => Ok(base),
            };
        }
        let b = x.dim(0)?;
        if b % 2 != 0 {
            candle_core::bail!(
                "adapters split by batch half need an even batch, got {b} rows at {}",
                key.path
            );
        }
        let h = b / 2;
        let halves = [
            (x.narrow(0, 0, h)?, Rows::FirstHalf),
            (x.narrow(0, h, h)?, Rows::SecondHalf),
        ];
        let mut parts = Vec::with_capacity(2);
        for (xh, half) in &halves {
            let d = sum(xh, &|r| r == Rows::All || r == *half)?;
            let mut out_dims = xh.dims().to_vec();
            if let Some(last) = out_dims.last_mut() {
                *last = base.dim(candle_core::D::Minus1)?;
            }
            parts.push(match d {
                Some(d) => d.to_dtype(base.dtype())?,
                None => Tensor::zeros(out_dims, base.dtype(), base.device())?,
            });
        }
        base + Tensor::cat(&parts, 0)?
    }

    /// Keeps the gradients of this scope's trainable tensors found in
    /// `grads` (a recomputed segment's backward), summed over calls.
    pub(crate) fn add_side_grads(&self, grads: &GradStore) -> Result<()> {
        if self.trainable.is_empty() {
            return Ok(());
        }
        let mut side = self
            .side
            .lock()
            .map_err(|_| candle_core::Error::Msg("LoRA scope: poisoned".into()))?;
        for t in &self.trainable {
            if let Some(g) = grads.get(t) {
                let sum = match side.remove(&t.id()) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                side.insert(t.id(), sum);
            }
        }
        Ok(())
    }

    /// Moves the gradients kept by recomputed segments into `grads` (added to
    /// what the outer backward found): call once after `backward`.
    pub fn merge_side_grads(&self, grads: &mut GradStore) -> Result<()> {
        let mut side = self
            .side
            .lock()
            .map_err(|_| candle_core::Error::Msg("LoRA scope: poisoned".into()))?;
        for t in &self.trainable {
            if let Some(g) = side.remove(&t.id()) {
                let sum = match grads.remove(t) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                grads.insert(t, sum);
            }
        }
        Ok(())
    }
}

thread_local! {
    static ACTIVE: RefCell<Option<Arc<Scope>>> = const { RefCell::new(None) };
}

/// Restores the scope that was in force before [`enter`] when dropped.
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    previous: Option<Arc<Scope>>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

/// Makes `scope` the adapters of this thread's model calls until the guard
/// drops (`None`: no adapters).
pub fn enter(scope: Option<Arc<Scope>>) -> ScopeGuard {
    let previous = ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), scope));
    ScopeGuard { previous }
}

/// The scope in force on this thread.
pub(crate) fn current() -> Option<Arc<Scope>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// `base` (the frozen layer's output for `x`) plus the adapters in force for
/// the layer at `key`.
pub(crate) fn adapt(key: &LayerKey, x: &Tensor, base: Tensor) -> Result<Tensor> {
    match current() {
        Some(scope) if !scope.is_empty() => scope.adapt(key, x, base),
        _ => Ok(base),
    }
}

/// As [`adapt`] for a 1×1 convolution over `[B, C, H, W]`: the adapters act
/// on the channels of every pixel.
pub(crate) fn adapt_channels(key: &LayerKey, x: &Tensor, base: Tensor) -> Result<Tensor> {
    match current() {
        Some(scope) if !scope.is_empty() && scope.covers(key) => {
            let xp = x.permute((0, 2, 3, 1))?;
            let bp = base.permute((0, 2, 3, 1))?;
            scope
                .adapt(key, &xp, bp)?
                .permute((0, 3, 1, 2))?
                .contiguous()
        }
        _ => Ok(base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn key(p: &str) -> LayerKey {
        LayerKey::new(Net::Unet, p)
    }

    fn layer(rank: usize, in_dim: usize, out_dim: usize, alpha: f64) -> LoraLayer {
        let d = Device::Cpu;
        LoraLayer {
            down: Tensor::randn(0f64, 1.0, (rank, in_dim), &d).unwrap(),
            up: Tensor::randn(0f64, 1.0, (out_dim, rank), &d).unwrap(),
            alpha,
        }
    }

    fn network(k: &LayerKey, l: LoraLayer) -> Arc<LoraNetwork> {
        Arc::new(LoraNetwork::new(BTreeMap::from([(k.clone(), l)])))
    }

    /// The delta is `alpha/r · x downᵀ upᵀ` element by element.
    #[test]
    fn delta_is_the_scaled_low_rank_product() {
        let l = layer(2, 3, 4, 8.0);
        let x = Tensor::randn(0f64, 1.0, (2, 5, 3), &Device::Cpu).unwrap();
        let got = l.delta(&x, 0.5).unwrap();
        assert_eq!(got.dims(), &[2, 5, 4]);
        let down = l.down.to_vec2::<f64>().unwrap();
        let up = l.up.to_vec2::<f64>().unwrap();
        let xs = x.to_vec3::<f64>().unwrap();
        let g = got.to_vec3::<f64>().unwrap();
        for b in 0..2 {
            for t in 0..5 {
                for o in 0..4 {
                    let mut want = 0.0;
                    for r in 0..2 {
                        let h: f64 = (0..3).map(|i| xs[b][t][i] * down[r][i]).sum();
                        want += up[o][r] * h;
                    }
                    want *= 8.0 / 2.0 * 0.5;
                    assert!((g[b][t][o] - want).abs() < 1e-12);
                }
            }
        }
    }

    /// Halves: the first half's rows get only the first-half network, the
    /// second's only the second; `All` acts on both; other layers see nothing.
    #[test]
    fn scope_splits_adapters_by_batch_half() {
        let k = key("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k");
        let (neg, pos, both) = (
            layer(2, 3, 4, 2.0),
            layer(3, 3, 4, 3.0),
            layer(1, 3, 4, 1.0),
        );
        let x = Tensor::randn(0f64, 1.0, (4, 5, 3), &Device::Cpu).unwrap();
        let base = Tensor::randn(0f64, 1.0, (4, 5, 4), &Device::Cpu).unwrap();
        let scope = Arc::new(Scope::new(vec![
            Applied {
                network: network(&k, neg.clone()),
                strength: 0.65,
                rows: Rows::FirstHalf,
            },
            Applied {
                network: network(&k, pos.clone()),
                strength: 0.8,
                rows: Rows::SecondHalf,
            },
            Applied {
                network: network(&k, both.clone()),
                strength: 1.0,
                rows: Rows::All,
            },
        ]));
        let _g = enter(Some(scope));
        let got = adapt(&k, &x, base.clone()).unwrap();
        let x1 = x.narrow(0, 0, 2).unwrap();
        let x2 = x.narrow(0, 2, 2).unwrap();
        let want1 = ((base.narrow(0, 0, 2).unwrap() + neg.delta(&x1, 0.65).unwrap()).unwrap()
            + both.delta(&x1, 1.0).unwrap())
        .unwrap();
        let want2 = ((base.narrow(0, 2, 2).unwrap() + pos.delta(&x2, 0.8).unwrap()).unwrap()
            + both.delta(&x2, 1.0).unwrap())
        .unwrap();
        let want = Tensor::cat(&[want1, want2], 0).unwrap();
        assert!(crate::sd::testutil::max_diff(&got, &want) < 1e-12);
        let other = key("mid_block.attentions.0.transformer_blocks.0.attn1.to_q");
        let untouched = adapt(&other, &x, base.clone()).unwrap();
        assert_eq!(crate::sd::testutil::max_diff(&untouched, &base), 0.0);
        // An odd batch cannot be split.
        let odd = Tensor::randn(0f64, 1.0, (3, 5, 3), &Device::Cpu).unwrap();
        let odd_base = Tensor::zeros((3, 5, 4), DType::F64, &Device::Cpu).unwrap();
        assert!(adapt(&k, &odd, odd_base).is_err());
    }

    /// The guard restores the outer scope; without one nothing is added.
    #[test]
    fn guards_nest_and_restore() {
        let k = key("x.transformer_blocks.0.attn1.to_q");
        let x = Tensor::randn(0f64, 1.0, (2, 3), &Device::Cpu).unwrap();
        let base = Tensor::zeros((2, 4), DType::F64, &Device::Cpu).unwrap();
        let outer = Arc::new(Scope::new(vec![Applied {
            network: network(&k, layer(1, 3, 4, 1.0)),
            strength: 1.0,
            rows: Rows::All,
        }]));
        assert!(current().is_none());
        {
            let _a = enter(Some(outer.clone()));
            let with = adapt(&k, &x, base.clone()).unwrap();
            assert!(
                with.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
                    > 0.0
            );
            {
                let _b = enter(None);
                let without = adapt(&k, &x, base.clone()).unwrap();
                assert_eq!(crate::sd::testutil::max_diff(&without, &base), 0.0);
            }
            assert!(Arc::ptr_eq(&current().unwrap(), &outer));
        }
        assert!(current().is_none());
    }

    /// Gradients to `down`, `up` and `x` through split adapters match central
    /// finite differences of the same scalar.
    #[test]
    fn gradients_match_finite_differences() {
        let d = Device::Cpu;
        let k = key("a.transformer_blocks.0.attn2.to_v");
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 4), &d).unwrap()).unwrap();
        let dn = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 4), &d).unwrap()).unwrap();
        let up = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 2), &d).unwrap()).unwrap();
        let probe = Tensor::randn(0f64, 1.0, (2, 3, 5), &d).unwrap();
        let f = |x: &Tensor, dn: &Tensor, up: &Tensor| -> Tensor {
            let l = LoraLayer {
                down: dn.clone(),
                up: up.clone(),
                alpha: 3.0,
            };
            let scope = Arc::new(Scope::new(vec![Applied {
                network: network(&k, l),
                strength: 0.7,
                rows: Rows::SecondHalf,
            }]));
            let _g = enter(Some(scope));
            let base = x
                .sqr()
                .unwrap()
                .sum_keepdim(2)
                .unwrap()
                .broadcast_as((2, 3, 5))
                .unwrap();
            let y = adapt(&k, x, base).unwrap();
            (y * &probe).unwrap().sum_all().unwrap()
        };
        let loss = f(x.as_tensor(), dn.as_tensor(), up.as_tensor());
        let grads = loss.backward().unwrap();
        let eps = 1e-6;
        for (which, var) in [(0, &x), (1, &dn), (2, &up)] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in 0..base.len() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let t = Tensor::from_vec(v, var.dims(), &d).unwrap();
                    let args = match which {
                        0 => (t, dn.as_tensor().clone(), up.as_tensor().clone()),
                        1 => (x.as_tensor().clone(), t, up.as_tensor().clone()),
                        _ => (x.as_tensor().clone(), dn.as_tensor().clone(), t),
                    };
                    f(&args.0, &args.1, &args.2).to_scalar::<f64>().unwrap()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                let an = g.get(i).unwrap().to_scalar::<f64>().unwrap();
                assert!(
                    (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{which}[{i}]: {an} vs {fd}"
                );
            }
        }
    }

    #[test]
    fn targets_parse_and_cover_the_right_layers() {
        let t: Targets = "attn, ff".parse().unwrap();
        assert!(t.attention && t.feed_forward && !t.text_encoder);
        assert_eq!(t.to_string(), "attn,ff");
        assert_eq!(Targets::default().to_string(), "attn");
        assert!("".parse::<Targets>().is_err());
        assert!("attn,conv".parse::<Targets>().is_err());
        let all: Targets = "attn,ff,te".parse().unwrap();
        let unet = |p: &str| LayerKey::new(Net::Unet, p);
        assert!(Targets::default().covers(&unet(
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
        )));
        assert!(!Targets::default().covers(&unet(
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"
        )));
        assert!(all.covers(&unet(
            "mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj"
        )));
        assert!(!all.covers(&unet("down_blocks.0.attentions.0.proj_in")));
        assert!(!all.covers(&unet("time_embedding.linear_1")));
        let te = LayerKey::new(Net::TextEncoder2, "text_model.encoder.layers.2.mlp.fc1");
        assert!(all.covers(&te) && !t.covers(&te));
        let proj = LayerKey::new(Net::TextEncoder2, "text_projection");
        assert!(!all.covers(&proj));
    }

    /// Side gradients are summed over calls and then added to the store's.
    #[test]
    fn side_gradients_merge_into_the_store() {
        let d = Device::Cpu;
        let v = Var::from_tensor(&Tensor::ones((2,), DType::F64, &d).unwrap()).unwrap();
        let scope = Scope::training(Vec::new(), vec![v.as_tensor().clone()]);
        for _ in 0..2 {
            let g = (v.as_tensor() * 3.0)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            scope.add_side_grads(&g).unwrap();
        }
        let mut outer = (v.as_tensor() * 1.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        scope.merge_side_grads(&mut outer).unwrap();
        let g = outer.get(v.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(g, vec![7.0, 7.0]);
        // Merged once: a second merge adds nothing.
        scope.merge_side_grads(&mut outer).unwrap();
        assert_eq!(
            outer.get(v.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
            vec![7.0, 7.0]
        );
    }
}
