//! A safe subset of Python's pickle virtual machine, enough for the pickles
//! `torch.save` writes (protocols 2–5).
//!
//! Why our own: unpickling in Python imports and calls whatever the file names,
//! so a `.pt` file can run code. Here nothing is ever imported or called. A
//! `GLOBAL` only *names* something; the few names torch uses for tensors
//! (`torch._utils._rebuild_tensor_v2`, storage classes, `OrderedDict`, ...) are
//! recognised and their effect is reproduced as data. Any other name is an
//! error naming it ([`GlobalPolicy::Strict`]), or — for model checkpoints whose
//! trainer state holds foreign objects next to the weights — an inert
//! placeholder that is never constructed ([`GlobalPolicy::Inert`]).
//!
//! Tensors come out as [`TensorRef`]s (storage key, dtype, offset, shape,
//! strides); reading the storage bytes is the container's job (`reader.rs`).
//!
//! A hostile pickle can also try to exhaust memory or time instead of running
//! code (its opcodes can copy values, so a few hundred bytes can describe
//! billions of objects): every value built is charged against [`Limits`]
//! before it is made, and going past one is an error naming the limit.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    /// From a storage class name (`FloatStorage`) as `torch.save` writes it.
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" | "UntypedStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// From a dtype attribute name (`torch.float32`), as `_rebuild_tensor_v3` receives it.
    fn from_dtype_name(name: &str) -> Option<Self> {
        Some(match name {
            "float64" | "double" => Self::F64,
            "float32" | "float" => Self::F32,
            "float16" | "half" => Self::F16,
            "bfloat16" => Self::BF16,
            "int64" | "long" => Self::I64,
            "int32" | "int" => Self::I32,
            "int16" | "short" => Self::I16,
            "int8" => Self::I8,
            "uint8" => Self::U8,
            "bool" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(&self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The storage class name torch writes for this dtype.
    pub fn storage_class(&self) -> &'static str {
        match self {
            Self::F64 => "DoubleStorage",
            Self::F32 => "FloatStorage",
            Self::F16 => "HalfStorage",
            Self::BF16 => "BFloat16Storage",
            Self::I64 => "LongStorage",
            Self::I32 => "IntStorage",
            Self::I16 => "ShortStorage",
            Self::I8 => "CharStorage",
            Self::U8 => "ByteStorage",
            Self::Bool => "BoolStorage",
        }
    }

    /// The candle dtype holding these elements (`None`: candle has no int8).
    pub fn candle(&self) -> Option<candle_core::DType> {
        use candle_core::DType;
        Some(match self {
            Self::F64 => DType::F64,
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
            Self::I64 => DType::I64,
            Self::I32 => DType::I32,
            Self::I16 => DType::I16,
            Self::U8 | Self::Bool => DType::U8,
            Self::I8 => return None,
        })
    }

    /// Short name for messages (`F32`), as safetensors writes dtypes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::F64 => "F64",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::Bool => "BOOL",
        }
    }
}

/// A storage named by a persistent id: `('storage', <class>, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// The record name (`archive/data/<key>`, or the key in the legacy format).
    pub key: String,
    pub dtype: StorageDType,
    /// Element offset into the root storage (legacy storage views; 0 otherwise).
    pub view_offset: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it; its data stays on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// Element type of the tensor (differs from the storage's only for `_rebuild_tensor_v3`).
    pub dtype: StorageDType,
    /// Offset in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The callables and classes this reader knows, by what they do.
#[derive(Debug, Clone, PartialEq, Hash)]
pub enum Global {
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    OrderedDict,
    Storage(StorageDType),
    DType(StorageDType),
    Device,
    Size,
    GetLayout,
    /// `_codecs.encode`: how protocol 2 pickles `bytes` objects.
    CodecsEncode,
    /// Anything else, kept as a name only ([`GlobalPolicy::Inert`]).
    Foreign(String),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("torch._utils", "_rebuild_tensor") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v2") => Self::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor_v3") => Self::RebuildTensorV3,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Self::RebuildParameterWithState,
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch", "device") => Self::Device,
            ("torch", "Size") => Self::Size,
            ("torch.serialization", "_get_layout") => Self::GetLayout,
            ("_codecs", "encode") => Self::CodecsEncode,
            ("torch", n) | ("torch.storage", n) => match StorageDType::from_storage_class(n) {
                Some(d) => Self::Storage(d),
                None => Self::DType(StorageDType::from_dtype_name(n)?),
            },
            _ => return None,
        })
    }
}

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Dicts keep insertion order (torch state dicts are `OrderedDict`s).
    Dict(Vec<(Value, Value)>),
    Global(Global),
    /// Boxed, as is `Tensor`: they are rare, and a small `Value` (32 bytes)
    /// keeps what a pickle's objects cost in memory low.
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// An object of a class this reader does not construct; only its class name is kept.
    Inert(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short description for messages: `dict`, `tensor F32 [3, 768]`, ...
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(_) => "class".into(),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(t) => format!("tensor {} {:?}", t.dtype.name(), t.shape),
            Value::Inert(name) => format!("object of {name}"),
        }
    }

    /// Every tensor reachable from this value, for callers that need the storages.
    pub fn tensors(&self) -> Vec<&TensorRef> {
        let mut out = Vec::new();
        let mut todo = vec![self];
        while let Some(v) = todo.pop() {
            match v {
                Value::Tensor(t) => out.push(&**t),
                Value::List(items) | Value::Tuple(items) => todo.extend(items.iter()),
                Value::Dict(pairs) => {
                    for (k, v) in pairs {
                        todo.push(k);
                        todo.push(v);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// What to do with a global outside the tensor allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPolicy {
    /// Refuse the file, naming the global (embeddings: nothing else belongs there).
    Strict,
    /// Keep an inert placeholder that is never constructed (checkpoints' trainer state).
    Inert,
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    #[error("the pickle ends early (at byte {offset}); the file is truncated")]
    Truncated { offset: usize },
    #[error(
        "the pickle names `{module}.{name}`, which is not part of a PyTorch tensor file; \
         refusing to load it (Python would import and run it). Only tensors, dicts, lists, \
         strings and numbers are read"
    )]
    ForbiddenGlobal { module: String, name: String },
    #[error("byte {offset}: {message}")]
    Invalid { offset: usize, message: String },
    #[error(
        "byte {offset}: the pickle goes past a safety limit: {limit}. PyTorch files stay far \
         below it, so this one is damaged or was built to exhaust memory; it is refused before \
         anything large is allocated. Get the file again from a source you trust, or a \
         .safetensors version of it"
    )]
    Limit { offset: usize, limit: Limit },
}

/// Which bound of [`Limits`] a pickle went past (with the bound), for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth(u32),
    Objects(u64),
    Bytes(u64),
    Memo(usize),
    Container(usize),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Depth(n) => write!(f, "containers nested deeper than {n} levels"),
            Limit::Objects(n) => write!(
                f,
                "more than {n} objects built (copies made by DUP and memo GET count in full)"
            ),
            Limit::Bytes(n) => write!(
                f,
                "more than {} MiB of strings and bytes built (copies count in full)",
                n >> 20
            ),
            Limit::Memo(n) => write!(f, "more than {n} memo entries"),
            Limit::Container(n) => write!(f, "a list, tuple or dict of more than {n} items"),
        }
    }
}

/// Bounds on the work and memory one pickle may cost.
///
/// Why: the pickle machine's own opcodes are a compression scheme. `DUP` and
/// memo `GET` copy a whole value and `TUPLE2` pairs two copies, so 32 pairs of
/// bytes describe 2³² objects; a 422-byte file could otherwise take every byte
/// of memory. Every value built — copies included, counted in full *before*
/// they are made — is charged against these budgets, so parsing stops with a
/// named limit while the memory used is still a fraction of the budget.
///
/// The defaults are one to two orders of magnitude above what real files
/// need: an SD checkpoint's pickle builds about 60 objects per tensor (SDXL
/// with EMA weights and Adam state, ~15k tensors: under 1M objects) and a few
/// MiB of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting of containers (and unfinished MARKs); deeper values could
    /// exhaust the stack when they are dropped.
    pub depth: u32,
    /// Values built in total, copies included (each costs ~100 bytes).
    pub objects: u64,
    /// Bytes of strings, byte strings and big integers built, copies included.
    pub bytes: u64,
    /// Entries in the memo.
    pub memo: usize,
    /// Items in one list, tuple or dict.
    pub container: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        depth: 100,
        objects: 5_000_000,
        bytes: 256 << 20,
        memo: 1_000_000,
        container: 1_000_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Containers nested deeper than this are refused (a hostile file could
/// otherwise exhaust the stack when the values are dropped).
pub const MAX_DEPTH: u32 = Limits::DEFAULT.depth;

/// The stored legacy-format magic number `0x1950a86a20f9469cfc6c` as `LONG1` bytes.
pub const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// What building a value cost: the values in it and the payload bytes they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cost {
    objects: u64,
    bytes: u64,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            objects: self.objects.saturating_add(other.objects),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }

    /// One value that is not a container, with its payload.
    fn leaf(v: &Value) -> Cost {
        let bytes = match v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) | Value::BigInt(b) => b.len(),
            Value::Inert(n) | Value::Global(Global::Foreign(n)) => n.len(),
            Value::Storage(s) => s.key.len(),
            Value::Tensor(t) => t.storage.key.len() + 16 * t.shape.len(),
            _ => 0,
        };
        Cost {
            objects: 1,
            bytes: bytes as u64,
        }
    }

    /// A whole value, containers walked (their depth is bounded by [`Limits::depth`]).
    fn of(v: &Value) -> Cost {
        let node = Cost {
            objects: 1,
            bytes: 0,
        };
        match v {
            Value::List(items) | Value::Tuple(items) => {
                items.iter().fold(node, |c, i| c.add(Cost::of(i)))
            }
            Value::Dict(pairs) => pairs
                .iter()
                .fold(node, |c, (k, v)| c.add(Cost::of(k)).add(Cost::of(v))),
            other => Cost::leaf(other),
        }
    }
}

/// Where each key of a dict under construction is, by hash: setting an item
/// is then O(1) instead of a scan (a scan made a dict of n keys cost n²/2
/// comparisons, minutes for a few hundred thousand keys).
type KeyIndex = HashMap<u64, Vec<usize>>;

/// A value with the nesting depth of its containers and what it cost to build.
#[derive(Debug)]
struct Item {
    value: Value,
    depth: u32,
    cost: Cost,
    /// For a dict on the stack: its key index, built on the first SETITEM(S).
    keys: Option<KeyIndex>,
}

impl Item {
    fn leaf(value: Value) -> Self {
        Self {
            cost: Cost::leaf(&value),
            value,
            depth: 0,
            keys: None,
        }
    }

    /// A copy for DUP and the memo (the key index is rebuilt when needed).
    fn copy(&self) -> Self {
        Self {
            value: self.value.clone(),
            depth: self.depth,
            cost: self.cost,
            keys: None,
        }
    }
}

/// Feeds a value into a hasher; consistent with `Value`'s `PartialEq` (equal
/// values hash equally: `0.0` and `-0.0` are equal floats, so they hash alike).
fn hash_value(v: &Value, h: &mut impl Hasher) {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::None => {}
        Value::Bool(b) => b.hash(h),
        Value::Int(i) => i.hash(h),
        Value::BigInt(b) | Value::Bytes(b) => b.hash(h),
        Value::Float(f) => (if *f == 0.0 { 0 } else { f.to_bits() }).hash(h),
        Value::Str(s) | Value::Inert(s) => s.hash(h),
        Value::List(items) | Value::Tuple(items) => {
            items.len().hash(h);
            items.iter().for_each(|i| hash_value(i, h));
        }
        Value::Dict(pairs) => {
            pairs.len().hash(h);
            for (k, v) in pairs {
                hash_value(k, h);
                hash_value(v, h);
            }
        }
        Value::Global(g) => g.hash(h),
        Value::Storage(s) => s.key.hash(h),
        Value::Tensor(t) => {
            t.storage.key.hash(h);
            t.shape.hash(h);
            t.offset.hash(h);
        }
    }
}

/// Reads one pickle starting at `data[0]` within [`Limits::DEFAULT`]; returns
/// the value and the number of bytes consumed.
pub fn load(data: &[u8], policy: GlobalPolicy) -> Result<(Value, usize), PickleError> {
    load_with(data, policy, &Limits::DEFAULT)
}

/// [`load`] within the given limits.
///
/// Work is linear in the pickle's length plus the objects built: every opcode
/// consumes input, copies are charged before they are made, dict keys are
/// hashed.
pub fn load_with(
    data: &[u8],
    policy: GlobalPolicy,
    limits: &Limits,
) -> Result<(Value, usize), PickleError> {
    let mut vm = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        policy,
        limits: *limits,
        built: Cost::default(),
        hasher: RandomState::new(),
    };
    let value = vm.run()?;
    Ok((value, vm.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u32, Item>,
    policy: GlobalPolicy,
    limits: Limits,
    /// Everything built so far, copies included.
    built: Cost,
    /// Randomly keyed, so that no file can be made of colliding keys.
    hasher: RandomState,
}

impl Machine<'_> {
    fn invalid(&self, message: impl Into<String>) -> PickleError {
        PickleError::Invalid {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn limit(&self, limit: Limit) -> PickleError {
        PickleError::Limit {
            offset: self.pos,
            limit,
        }
    }

    /// Charges `cost` to the budgets; called before the value is built.
    fn charge(&mut self, cost: Cost) -> Result<(), PickleError> {
        self.built = self.built.add(cost);
        if self.built.objects > self.limits.objects {
            return Err(self.limit(Limit::Objects(self.limits.objects)));
        }
        if self.built.bytes > self.limits.bytes {
            return Err(self.limit(Limit::Bytes(self.limits.bytes)));
        }
        Ok(())
    }

    fn check_depth(&self, depth: u32) -> Result<(), PickleError> {
        if depth > self.limits.depth {
            return Err(self.limit(Limit::Depth(self.limits.depth)));
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<(), PickleError> {
        if len > self.limits.container {
            return Err(self.limit(Limit::Container(self.limits.container)));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated {
                offset: self.data.len(),
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, PickleError> {
        Ok(self.u32()? as i32)
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| PickleError::Truncated {
            offset: self.data.len(),
        })
    }

    fn len_i32(&mut self) -> Result<usize, PickleError> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| self.invalid(format!("negative length {n}")))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                offset: self.data.len(),
            })?;
        let s = String::from_utf8_lossy(&rest[..end]).to_string();
        self.pos += end + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize) -> Result<String, PickleError> {
        let at = self.pos;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| PickleError::Invalid {
            offset: at,
            message: "a string is not valid UTF-8".into(),
        })
    }

    /// Pushes a new value that is not a container (charged here).
    fn push(&mut self, value: Value) -> Result<(), PickleError> {
        let item = Item::leaf(value);
        self.charge(item.cost)?;
        self.stack.push(item);
        Ok(())
    }

    /// Pushes an item already charged for.
    fn push_item(&mut self, item: Item) -> Result<(), PickleError> {
        self.check_depth(item.depth)?;
        self.stack.push(item);
        Ok(())
    }

    fn mark(&mut self) -> Result<(), PickleError> {
        // Every unfinished MARK is a container being built around what follows.
        if self.marks.len() >= self.limits.depth as usize {
            return Err(self.limit(Limit::Depth(self.limits.depth)));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.invalid("stack underflow at a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.invalid("stack underflow"))
    }

    fn top_mut(&mut self) -> Result<&mut Item, PickleError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or(PickleError::Invalid {
            offset: pos,
            message: "stack underflow".into(),
        })
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.invalid("no MARK on the stack"))?;
        if m > self.stack.len() {
            return Err(self.invalid("MARK beyond the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    /// A new tuple or list of `items` (only its own node is charged: the
    /// items were charged when they were built).
    fn container(
        &mut self,
        items: Vec<Item>,
        make: impl FnOnce(Vec<Value>) -> Value,
    ) -> Result<Item, PickleError> {
        self.check_len(items.len())?;
        let node = Cost {
            objects: 1,
            bytes: 0,
        };
        self.charge(node)?;
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        let cost = items.iter().fold(node, |c, i| c.add(i.cost));
        Ok(Item {
            value: make(items.into_iter().map(|i| i.value).collect()),
            depth,
            cost,
            keys: None,
        })
    }

    /// DUP: a copy of the top, charged in full before it is made.
    fn dup(&mut self) -> Result<(), PickleError> {
        let cost = self
            .stack
            .last()
            .map(|i| i.cost)
            .ok_or_else(|| self.invalid("DUP on an empty stack"))?;
        self.charge(cost)?;
        let copy = self.stack.last().map(Item::copy);
        match copy {
            Some(item) => self.push_item(item),
            None => Err(self.invalid("DUP on an empty stack")),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let cost = self
            .stack
            .last()
            .map(|i| i.cost)
            .ok_or_else(|| self.invalid("memo put on an empty stack"))?;
        if self.memo.len() >= self.limits.memo && !self.memo.contains_key(&key) {
            return Err(self.limit(Limit::Memo(self.limits.memo)));
        }
        self.charge(cost)?;
        if let Some(top) = self.stack.last().map(Item::copy) {
            self.memo.insert(key, top);
        }
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let cost = self
            .memo
            .get(&key)
            .map(|i| i.cost)
            .ok_or_else(|| self.invalid(format!("memo key {key} is not defined")))?;
        self.charge(cost)?;
        match self.memo.get(&key).map(Item::copy) {
            Some(item) => self.push_item(item),
            None => Err(self.invalid(format!("memo key {key} is not defined"))),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match Global::resolve(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => match self.policy {
                GlobalPolicy::Strict => Err(PickleError::ForbiddenGlobal {
                    module: module.to_string(),
                    name: name.to_string(),
                }),
                GlobalPolicy::Inert => {
                    self.push(Value::Global(Global::Foreign(format!("{module}.{name}"))))
                }
            },
        }
    }

    /// Appends items to the list (or set) at the top of the stack.
    fn extend_top(&mut self, items: Vec<Item>) -> Result<(), PickleError> {
        let pos = self.pos;
        let limits = self.limits;
        let top = self.top_mut()?;
        let depth = items.iter().map(|i| i.depth + 1).max().unwrap_or(0);
        let added = items.iter().fold(Cost::default(), |c, i| c.add(i.cost));
        match &mut top.value {
            Value::List(l) => {
                if l.len().saturating_add(items.len()) > limits.container {
                    return Err(PickleError::Limit {
                        offset: pos,
                        limit: Limit::Container(limits.container),
                    });
                }
                l.extend(items.into_iter().map(|i| i.value))
            }
            Value::Inert(_) => {}
            other => {
                return Err(PickleError::Invalid {
                    offset: pos,
                    message: format!("APPEND to a {}", other.kind()),
                })
            }
        }
        top.cost = top.cost.add(added);
        top.depth = top.depth.max(depth);
        let d = top.depth;
        self.check_depth(d)
    }

    /// Sets key/value pairs on the dict at the top of the stack.
    fn set_items(&mut self, items: Vec<Item>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(self.invalid("SETITEMS with an odd number of items"));
        }
        let pos = self.pos;
        let limits = self.limits;
        let hasher = self.hasher.clone();
        let hash = |v: &Value| {
            let mut h = hasher.build_hasher();
            hash_value(v, &mut h);
            h.finish()
        };
        let top = self.top_mut()?;
        let depth = items.iter().map(|i| i.depth + 1).max().unwrap_or(0);
        let added = items.iter().fold(Cost::default(), |c, i| c.add(i.cost));
        match &mut top.value {
            Value::Dict(d) => {
                let index = top.keys.get_or_insert_with(|| {
                    let mut index = KeyIndex::new();
                    for (i, (k, _)) in d.iter().enumerate() {
                        index.entry(hash(k)).or_default().push(i);
                    }
                    index
                });
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let h = hash(&k.value);
                    let slot = index
                        .get(&h)
                        .and_then(|at| at.iter().copied().find(|&i| d[i].0 == k.value));
                    match slot {
                        Some(i) => d[i].1 = v.value,
                        None => {
                            if d.len() >= limits.container {
                                return Err(PickleError::Limit {
                                    offset: pos,
                                    limit: Limit::Container(limits.container),
                                });
                            }
                            index.entry(h).or_default().push(d.len());
                            d.push((k.value, v.value));
                        }
                    }
                }
            }
            Value::Inert(_) => {}
            other => {
                return Err(PickleError::Invalid {
                    offset: pos,
                    message: format!("SETITEM on a {}", other.kind()),
                })
            }
        }
        top.cost = top.cost.add(added);
        top.depth = top.depth.max(depth);
        let d = top.depth;
        self.check_depth(d)
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                b'.' => {
                    // STOP
                    let item = self.pop()?;
                    return Ok(item.value);
                }
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.invalid(format!("pickle protocol {p} (supported: 0-5)")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.take(8)?;
                }
                b'(' => self.mark()?,
                b'0' => {
                    // POP
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => self.dup()?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'I' => {
                    let l = self.line()?;
                    let v = match l.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(
                            s.parse()
                                .map_err(|_| self.invalid(format!("bad INT `{s}`")))?,
                        ),
                    };
                    self.push(v)?;
                }
                b'L' => {
                    let l = self.line()?;
                    let s = l.trim_end_matches('L');
                    let v = s
                        .parse()
                        .map_err(|_| self.invalid(format!("LONG `{s}` does not fit 64 bits")))?;
                    self.push(Value::Int(v))?;
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l
                        .trim()
                        .parse()
                        .map_err(|_| self.invalid(format!("bad FLOAT `{l}`")))?;
                    self.push(Value::Float(v))?;
                }
                b'J' => {
                    let v = self.i32()?;
                    self.push(Value::Int(v as i64))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?;
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.len_i32()?
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.push(long_value(bytes))?;
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.utf8(n)?;
                    self.push(Value::Str(s))?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.utf8(n)?;
                    self.push(Value::Str(s))?;
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.utf8(n)?;
                    self.push(Value::Str(s))?;
                }
                b'V' => {
                    let l = self.line()?;
                    self.push(Value::Str(l))?;
                }
                b'S' => {
                    let l = self.line()?;
                    let s = l.trim();
                    let unquoted = s
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                        .ok_or_else(|| self.invalid("STRING is not quoted"))?;
                    self.push(Value::Str(unquoted.to_string()))?;
                }
                b'T' | b'U' => {
                    // BINSTRING / SHORT_BINSTRING: Python 2 byte strings.
                    let n = if op == b'T' {
                        self.len_i32()?
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    let s = String::from_utf8_lossy(b).to_string();
                    self.push(Value::Str(s))?;
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?;
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    let item = self.container(items, Value::Tuple)?;
                    self.push_item(item)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let item = self.container(items, Value::Tuple)?;
                    self.push_item(item)?;
                }
                b']' | 0x8f => self.push(Value::List(Vec::new()))?,
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    let item = self.container(items, Value::List)?;
                    self.push_item(item)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.extend_top(items)?;
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.check_len(items.len() / 2)?;
                    self.push(Value::Dict(Vec::new()))?;
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?.value;
                    let module = self.pop()?.value;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(self.invalid("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?.value;
                    let v = self.call(f, args)?;
                    self.charge(Cost {
                        objects: 1,
                        bytes: 0,
                    })?;
                    self.push_item(v)?;
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop()?;
                    let cls = self.pop()?.value;
                    let v = self.call(cls, args)?;
                    self.charge(Cost {
                        objects: 1,
                        bytes: 0,
                    })?;
                    self.push_item(v)?;
                }
                0x92 => {
                    // NEWOBJ_EX: keyword arguments are ignored (no known class takes them).
                    self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?.value;
                    let v = self.call(cls, args)?;
                    self.charge(Cost {
                        objects: 1,
                        bytes: 0,
                    })?;
                    self.push_item(v)?;
                }
                b'b' => {
                    // BUILD: a state for the object below. Tensors, dicts and inert
                    // objects take no state we need (`_metadata` of state dicts, hooks).
                    self.pop()?;
                    if self.stack.is_empty() {
                        return Err(self.invalid("BUILD on an empty stack"));
                    }
                }
                b'Q' => {
                    let pid = self.pop()?.value;
                    let v = self.persistent(pid)?;
                    self.push(v)?;
                }
                b'P' => {
                    return Err(self.invalid("text persistent ids (PERSID) are not used by torch"))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let l = self.line()?;
                    let k = l.parse().map_err(|_| self.invalid("bad PUT index"))?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'g' => {
                    let l = self.line()?;
                    let k = l.parse().map_err(|_| self.invalid("bad GET index"))?;
                    self.memo_get(k)?;
                }
                other => {
                    self.pos -= 1;
                    return Err(self.invalid(format!(
                        "opcode 0x{other:02x} is not one torch writes (or the file is not a pickle)"
                    )));
                }
            }
        }
    }

    /// `f(*args)` for the known callables, as data. The result is made of
    /// (moved) parts of the arguments plus small values, so only its own node
    /// is charged (by the caller); its cost is measured for later copies.
    fn call(&self, f: Value, args: Item) -> Result<Item, PickleError> {
        let Value::Global(g) = f else {
            return Err(self.invalid(format!("call of a {} (not a class)", f.kind())));
        };
        let args_depth = args.depth;
        let args = match args.value {
            Value::Tuple(a) => a,
            other => return Err(self.invalid(format!("call arguments are a {}", other.kind()))),
        };
        let arg = |i: usize| args.get(i);
        let usize_arg = |i: usize, what: &str| -> Result<usize, PickleError> {
            arg(i)
                .and_then(Value::as_int)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| self.invalid(format!("tensor {what} is not a non-negative int")))
        };
        let dims_arg = |i: usize, what: &str| -> Result<Vec<usize>, PickleError> {
            match arg(i) {
                Some(Value::Tuple(v)) | Some(Value::List(v)) => v
                    .iter()
                    .map(|d| d.as_int().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| self.invalid(format!("tensor {what} holds a non-integer"))),
                _ => Err(self.invalid(format!("tensor {what} is not a tuple"))),
            }
        };
        let value = match g {
            Global::RebuildTensor | Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                let Some(Value::Storage(storage)) = arg(0) else {
                    return Err(self.invalid("_rebuild_tensor without a storage"));
                };
                let shape = dims_arg(2, "size")?;
                let stride = dims_arg(3, "stride")?;
                if shape.len() != stride.len() {
                    return Err(self.invalid(format!(
                        "tensor size {shape:?} and stride {stride:?} differ in rank"
                    )));
                }
                let dtype = if g == Global::RebuildTensorV3 {
                    match arg(6) {
                        Some(Value::Global(Global::DType(d))) => *d,
                        _ => return Err(self.invalid("_rebuild_tensor_v3 without a dtype")),
                    }
                } else {
                    storage.dtype
                };
                Value::Tensor(Box::new(TensorRef {
                    storage: (**storage).clone(),
                    dtype,
                    offset: usize_arg(1, "offset")?,
                    shape,
                    stride,
                }))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match arg(0) {
                Some(Value::Tensor(t)) => Value::Tensor(t.clone()),
                _ => return Err(self.invalid("nn.Parameter without a tensor")),
            },
            Global::OrderedDict => {
                // The pairs are moved, not copied: the arguments are consumed.
                let mut d = Vec::new();
                if let Some(Value::List(pairs)) | Some(Value::Tuple(pairs)) =
                    args.into_iter().next()
                {
                    for p in pairs {
                        match p {
                            Value::Tuple(kv) | Value::List(kv) if kv.len() == 2 => {
                                let mut kv = kv.into_iter();
                                if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                                    d.push((k, v));
                                }
                            }
                            _ => return Err(self.invalid("OrderedDict item is not a pair")),
                        }
                    }
                }
                let value = Value::Dict(d);
                return Ok(Item {
                    cost: Cost::of(&value),
                    value,
                    depth: args_depth,
                    keys: None,
                });
            }
            Global::Device => {
                let kind = arg(0).and_then(Value::as_str).unwrap_or("cpu");
                match arg(1).and_then(Value::as_int) {
                    Some(i) => Value::Str(format!("{kind}:{i}")),
                    None => Value::Str(kind.to_string()),
                }
            }
            Global::Size => {
                let value = match args.into_iter().next() {
                    Some(Value::Tuple(v)) | Some(Value::List(v)) => Value::Tuple(v),
                    _ => Value::Tuple(Vec::new()),
                };
                return Ok(Item {
                    cost: Cost::of(&value),
                    value,
                    depth: args_depth,
                    keys: None,
                });
            }
            Global::GetLayout => Value::Str(
                arg(0)
                    .and_then(Value::as_str)
                    .unwrap_or("torch.strided")
                    .to_string(),
            ),
            Global::CodecsEncode => {
                let s = arg(0).and_then(Value::as_str).unwrap_or("");
                // Protocol 2 writes bytes as latin-1 text: one char per byte.
                Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())
            }
            Global::Storage(_) | Global::DType(_) => {
                return Err(self.invalid("constructing a storage or dtype directly"))
            }
            Global::Foreign(name) => Value::Inert(name),
        };
        Ok(Item::leaf(value))
    }

    /// `persistent_load(pid)`: torch's storage references.
    fn persistent(&self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(parts) = pid else {
            return Err(self.invalid(format!("persistent id is a {}", pid.kind())));
        };
        if parts.first().and_then(Value::as_str) != Some("storage") {
            return Err(self.invalid("persistent id is not a torch storage"));
        }
        let dtype = match parts.get(1) {
            Some(Value::Global(Global::Storage(d))) => *d,
            Some(Value::Global(Global::Foreign(name))) => {
                return Err(self.invalid(format!("unknown storage type `{name}`")))
            }
            _ => return Err(self.invalid("storage without a storage type")),
        };
        let key = match parts.get(2) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Int(i)) => i.to_string(),
            _ => return Err(self.invalid("storage without a key")),
        };
        // Legacy files: (…, size, view_metadata) with view_metadata = (view_key, offset, size).
        let view_offset = match parts.get(5) {
            Some(Value::Tuple(view)) => view
                .get(1)
                .and_then(Value::as_int)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or_else(|| self.invalid("storage view without an offset"))?,
            _ => 0,
        };
        Ok(Value::Storage(Box::new(StorageRef {
            key,
            dtype,
            view_offset,
        })))
    }
}

/// `LONG1`/`LONG4` bytes (little-endian two's complement) as a value.
fn long_value(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut a = if negative { [0xffu8; 8] } else { [0u8; 8] };
        a[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(a))
    } else {
        Value::BigInt(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value, PickleError> {
        load(bytes, GlobalPolicy::Strict).map(|(v, _)| v)
    }

    #[test]
    fn numbers_strings_and_containers() {
        // {'a': [1, -2, 300, 70000], 'b': (True, None, 1.5), 'c': b'xy'}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend([b'X', 1, 0, 0, 0, b'a', b']', b'(', b'K', 1, b'J']);
        p.extend((-2i32).to_le_bytes());
        p.extend([b'M', 0x2c, 0x01, b'J']);
        p.extend(70000i32.to_le_bytes());
        p.extend([b'e', 0x8c, 1, b'b', 0x88, b'N', b'G']);
        p.extend(1.5f64.to_be_bytes());
        p.extend([0x87, 0x8c, 1, b'c', b'C', 2, b'x', b'y', b'u', b'.']);
        let v = run(&p).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(300),
                Value::Int(70000)
            ]))
        );
        assert_eq!(
            v.get("b"),
            Some(&Value::Tuple(vec![
                Value::Bool(true),
                Value::None,
                Value::Float(1.5)
            ]))
        );
        assert_eq!(v.get("c"), Some(&Value::Bytes(b"xy".to_vec())));
    }

    #[test]
    fn memo_and_long1() {
        // [x, x] where x = -1 as LONG1, memoised then fetched back.
        let p = [
            0x80, 2, b']', b'(', 0x8a, 1, 0xff, b'q', 7, b'h', 7, b'e', b'.',
        ];
        assert_eq!(
            run(&p).unwrap(),
            Value::List(vec![Value::Int(-1), Value::Int(-1)])
        );
        let magic = long_value(LEGACY_MAGIC.to_vec());
        assert_eq!(magic, Value::BigInt(LEGACY_MAGIC.to_vec()));
    }

    #[test]
    fn foreign_globals_are_refused_or_inert_never_run() {
        let p = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let err = run(p).unwrap_err();
        assert!(err.to_string().contains("os.system"), "{err}");
        let (v, _) = load(p, GlobalPolicy::Inert).unwrap();
        assert_eq!(v, Value::Inert("os.system".into()));
    }

    #[test]
    fn truncated_and_garbage_input_are_errors() {
        assert!(matches!(
            run(&[0x80, 2, b'X', 9, 0, 0, 0, b'a']),
            Err(PickleError::Truncated { .. })
        ));
        assert!(run(&[0x80, 2, 0xff]).is_err());
        assert!(run(&[0x80, 2, b'.']).is_err());
        assert!(run(&[]).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', MAX_DEPTH as usize + 5));
        p.extend(std::iter::repeat_n(b'a', MAX_DEPTH as usize + 4));
        p.push(b'.');
        let err = run(&p).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }

    #[test]
    fn copies_are_charged_before_they_are_made() {
        // DUP + TUPLE2 doubling (issue #18): refused by the object budget.
        let mut p = vec![0x80, 2, b']'];
        p.extend(b"2\x86".repeat(32));
        p.push(b'.');
        let start = std::time::Instant::now();
        let err = run(&p).unwrap_err();
        assert!(
            matches!(
                err,
                PickleError::Limit {
                    limit: Limit::Objects(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("5000000 objects"), "{err}");
        assert!(start.elapsed().as_secs() < 20);
        // The same through the memo, with a small budget: refused at the copy
        // that would pass it, not after.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        p.extend(b"h\x00h\x00\x86q\x000".repeat(32));
        p.push(b'.');
        let limits = Limits {
            objects: 1000,
            ..Limits::DEFAULT
        };
        let err = load_with(&p, GlobalPolicy::Strict, &limits).unwrap_err();
        assert!(err.to_string().contains("1000 objects"), "{err}");
        // Byte strings count by their length.
        let mut p = vec![0x80, 2, b'B'];
        p.extend(1000u32.to_le_bytes());
        p.extend([b'x'; 1000]);
        p.extend(b"2222.");
        let limits = Limits {
            bytes: 3500,
            ..Limits::DEFAULT
        };
        let err = load_with(&p, GlobalPolicy::Strict, &limits).unwrap_err();
        assert!(
            matches!(
                err,
                PickleError::Limit {
                    limit: Limit::Bytes(3500),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn memo_containers_and_marks_are_bounded() {
        let small = Limits {
            memo: 3,
            container: 4,
            depth: 5,
            ..Limits::DEFAULT
        };
        let load_small = |p: &[u8]| load_with(p, GlobalPolicy::Strict, &small).map(|(v, _)| v);
        // Four memo entries.
        let err = load_small(b"\x80\x02Nq\x00q\x01q\x02q\x03.").unwrap_err();
        assert!(
            err.to_string().contains("more than 3 memo entries"),
            "{err}"
        );
        // Re-putting a key is not a new entry.
        assert!(load_small(b"\x80\x02Nq\x00q\x00q\x00q\x00.").is_ok());
        // A list of five, by APPENDS and by LIST.
        let err = load_small(b"\x80\x02](NNNNNe.").unwrap_err();
        assert!(err.to_string().contains("more than 4 items"), "{err}");
        let err = load_small(b"\x80\x02(NNNNNl.").unwrap_err();
        assert!(err.to_string().contains("more than 4 items"), "{err}");
        // A dict of five keys.
        let err = load_small(b"\x80\x02}(K\x01NK\x02NK\x03NK\x04NK\x05Nu.").unwrap_err();
        assert!(err.to_string().contains("more than 4 items"), "{err}");
        // Unfinished MARKs nest like containers.
        let err = load_small(b"\x80\x02((((((N.").unwrap_err();
        assert!(err.to_string().contains("deeper than 5"), "{err}");
    }

    #[test]
    fn dict_keys_are_hashed_not_searched() {
        // 300k distinct keys, then one key set again: a scan per key would
        // take ~4.5e10 comparisons (minutes); hashing takes well under a second.
        let n = 300_000u32;
        let mut p = vec![0x80, 2, b'}', b'('];
        for i in 0..n {
            p.push(b'J');
            p.extend(i.to_le_bytes());
            p.push(b'N');
        }
        p.extend(b"u(J\x05\x00\x00\x00\x88u.");
        let start = std::time::Instant::now();
        let v = run(&p).unwrap();
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
        let d = v.as_dict().unwrap();
        assert_eq!(d.len(), n as usize);
        assert_eq!(d[5], (Value::Int(5), Value::Bool(true)));
        // Equal keys of different spellings are one key; 0.0 and -0.0 too.
        let mut p = b"\x80\x02}(G".to_vec();
        p.extend(0.0f64.to_be_bytes());
        p.extend(b"K\x01G");
        p.extend((-0.0f64).to_be_bytes());
        p.extend(b"K\x02u.");
        assert_eq!(
            run(&p).unwrap(),
            Value::Dict(vec![(Value::Float(0.0), Value::Int(2))])
        );
    }

    #[test]
    fn rebuild_tensor_v2_with_storage() {
        // _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR.".to_vec();
        let v = run(&p).unwrap();
        let Value::Tensor(t) = v else {
            panic!("not a tensor: {v:?}")
        };
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.stride, vec![3, 1]);
        assert_eq!(t.storage.key, "0");
        assert_eq!(t.dtype, StorageDType::F32);
        // An unknown storage class is named.
        let at = p.windows(12).position(|w| w == b"FloatStorage").unwrap();
        p.splice(at..at + 12, b"EvilxStorage".iter().copied());
        let err = run(&p).unwrap_err();
        assert!(err.to_string().contains("torch.EvilxStorage"), "{err}");
    }
}
