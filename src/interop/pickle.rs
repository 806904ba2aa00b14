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
//! strides); reading the storage bytes is the container's job (`torch.rs`).

use std::collections::HashMap;

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
#[derive(Debug, Clone, PartialEq)]
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
    Storage(StorageRef),
    Tensor(TensorRef),
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
                Value::Tensor(t) => out.push(t),
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
}

/// Containers nested deeper than this are refused (a hostile file could
/// otherwise exhaust the stack when the values are dropped).
const MAX_DEPTH: u32 = 100;

/// The stored legacy-format magic number `0x1950a86a20f9469cfc6c` as `LONG1` bytes.
pub const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// A value with the nesting depth of its containers.
#[derive(Debug, Clone)]
struct Item {
    value: Value,
    depth: u32,
}

impl Item {
    fn leaf(value: Value) -> Self {
        Self { value, depth: 0 }
    }
}

/// Reads one pickle starting at `data[0]`; returns the value and the number of bytes consumed.
pub fn load(data: &[u8], policy: GlobalPolicy) -> Result<(Value, usize), PickleError> {
    let mut vm = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        policy,
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
}

impl Machine<'_> {
    fn invalid(&self, message: impl Into<String>) -> PickleError {
        PickleError::Invalid {
            offset: self.pos,
            message: message.into(),
        }
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

    fn push(&mut self, value: Value) {
        self.stack.push(Item::leaf(value));
    }

    fn push_item(&mut self, item: Item) -> Result<(), PickleError> {
        if item.depth > MAX_DEPTH {
            return Err(self.invalid(format!("containers nested deeper than {MAX_DEPTH} levels")));
        }
        self.stack.push(item);
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

    fn container(items: Vec<Item>, make: impl FnOnce(Vec<Value>) -> Value) -> Item {
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        Item {
            value: make(items.into_iter().map(|i| i.value).collect()),
            depth,
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.invalid("memo put on an empty stack"))?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let item = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.invalid(format!("memo key {key} is not defined")))?;
        self.push_item(item)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match Global::resolve(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => match self.policy {
                GlobalPolicy::Strict => {
                    return Err(PickleError::ForbiddenGlobal {
                        module: module.to_string(),
                        name: name.to_string(),
                    })
                }
                GlobalPolicy::Inert => {
                    self.push(Value::Global(Global::Foreign(format!("{module}.{name}"))))
                }
            },
        }
        Ok(())
    }

    /// Appends items to the list (or set) at the top of the stack.
    fn extend_top(&mut self, items: Vec<Item>) -> Result<(), PickleError> {
        let pos = self.pos;
        let top = self.top_mut()?;
        let depth = items.iter().map(|i| i.depth + 1).max().unwrap_or(0);
        match &mut top.value {
            Value::List(l) => l.extend(items.into_iter().map(|i| i.value)),
            Value::Inert(_) => {}
            other => {
                return Err(PickleError::Invalid {
                    offset: pos,
                    message: format!("APPEND to a {}", other.kind()),
                })
            }
        }
        top.depth = top.depth.max(depth);
        let d = top.depth;
        if d > MAX_DEPTH {
            return Err(self.invalid(format!("containers nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// Sets key/value pairs on the dict at the top of the stack.
    fn set_items(&mut self, items: Vec<Item>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(self.invalid("SETITEMS with an odd number of items"));
        }
        let pos = self.pos;
        let top = self.top_mut()?;
        let depth = items.iter().map(|i| i.depth + 1).max().unwrap_or(0);
        match &mut top.value {
            Value::Dict(d) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    match d.iter_mut().find(|(ek, _)| *ek == k.value) {
                        Some(slot) => slot.1 = v.value,
                        None => d.push((k.value, v.value)),
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
        top.depth = top.depth.max(depth);
        let d = top.depth;
        if d > MAX_DEPTH {
            return Err(self.invalid(format!("containers nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
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
                b'(' => self.marks.push(self.stack.len()),
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
                b'2' => {
                    let top = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or_else(|| self.invalid("DUP on an empty stack"))?;
                    self.push_item(top)?;
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
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
                    self.push(v);
                }
                b'L' => {
                    let l = self.line()?;
                    let s = l.trim_end_matches('L');
                    let v = s
                        .parse()
                        .map_err(|_| self.invalid(format!("LONG `{s}` does not fit 64 bits")))?;
                    self.push(Value::Int(v));
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l
                        .trim()
                        .parse()
                        .map_err(|_| self.invalid(format!("bad FLOAT `{l}`")))?;
                    self.push(Value::Float(v));
                }
                b'J' => {
                    let v = self.i32()?;
                    self.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.len_i32()?
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.push(long_value(bytes));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.utf8(n)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.utf8(n)?;
                    self.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.utf8(n)?;
                    self.push(Value::Str(s));
                }
                b'V' => {
                    let l = self.line()?;
                    self.push(Value::Str(l));
                }
                b'S' => {
                    let l = self.line()?;
                    let s = l.trim();
                    let unquoted = s
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                        .ok_or_else(|| self.invalid("STRING is not quoted"))?;
                    self.push(Value::Str(unquoted.to_string()));
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
                    self.push(Value::Str(s));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    let item = Self::container(items, Value::Tuple);
                    self.push_item(item)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let item = Self::container(items, Value::Tuple);
                    self.push_item(item)?;
                }
                b']' | 0x8f => self.push(Value::List(Vec::new())),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    let item = Self::container(items, Value::List);
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
                b'}' => self.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()));
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
                    self.push_item(v)?;
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop()?;
                    let cls = self.pop()?.value;
                    let v = self.call(cls, args)?;
                    self.push_item(v)?;
                }
                0x92 => {
                    // NEWOBJ_EX: keyword arguments are ignored (no known class takes them).
                    self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?.value;
                    let v = self.call(cls, args)?;
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
                    self.push(v);
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

    /// `f(*args)` for the known callables, as data.
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
                Value::Tensor(TensorRef {
                    storage: storage.clone(),
                    dtype,
                    offset: usize_arg(1, "offset")?,
                    shape,
                    stride,
                })
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match arg(0) {
                Some(t @ Value::Tensor(_)) => t.clone(),
                _ => return Err(self.invalid("nn.Parameter without a tensor")),
            },
            Global::OrderedDict => {
                let mut d = Vec::new();
                if let Some(Value::List(pairs)) | Some(Value::Tuple(pairs)) = arg(0) {
                    for p in pairs {
                        match p {
                            Value::Tuple(kv) | Value::List(kv) if kv.len() == 2 => {
                                d.push((kv[0].clone(), kv[1].clone()))
                            }
                            _ => return Err(self.invalid("OrderedDict item is not a pair")),
                        }
                    }
                }
                return Ok(Item {
                    value: Value::Dict(d),
                    depth: args_depth,
                });
            }
            Global::Device => {
                let kind = arg(0).and_then(Value::as_str).unwrap_or("cpu");
                match arg(1).and_then(Value::as_int) {
                    Some(i) => Value::Str(format!("{kind}:{i}")),
                    None => Value::Str(kind.to_string()),
                }
            }
            Global::Size => match arg(0) {
                Some(Value::Tuple(v)) | Some(Value::List(v)) => Value::Tuple(v.clone()),
                _ => Value::Tuple(Vec::new()),
            },
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
        Ok(Value::Storage(StorageRef {
            key,
            dtype,
            view_offset,
        }))
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
