//! Query results as JSON rows (policy test fixtures, `/v1/query`).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use serde_json::{Map, Value};

/// Result rows as JSON objects keyed by column name.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, String> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let mut cols: Vec<std::vec::IntoIter<Value>> = b
            .columns()
            .iter()
            .map(|c| json_column(c).map(Vec::into_iter))
            .collect::<Result<_, _>>()?;
        for _ in 0..b.num_rows() {
            let mut row = Map::new();
            for (f, col) in schema.fields().iter().zip(cols.iter_mut()) {
                row.insert(f.name().clone(), col.next().unwrap_or(Value::Null));
            }
            out.push(row);
        }
    }
    Ok(out)
}

fn json_column(c: &ArrayRef) -> Result<Vec<Value>, String> {
    use arrow::compute::cast;
    let num = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    let n = c.len();
    // One value per row, null where the array is null.
    let each = |a: &dyn Array, f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if a.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    let values: Vec<Value> = match c.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => {
            let a = c.as_boolean();
            each(a, &|i| Value::Bool(a.value(i)))
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let c = cast(c, &DataType::Int64).map_err(|e| e.to_string())?;
            let a = c.as_primitive::<Int64Type>();
            each(a, &|i| Value::from(a.value(i)))
        }
        DataType::UInt64 => {
            let a = c.as_primitive::<UInt64Type>();
            each(a, &|i| Value::from(a.value(i)))
        }
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let c = cast(c, &DataType::Float64).map_err(|e| e.to_string())?;
            let a = c.as_primitive::<Float64Type>();
            each(a, &|i| num(a.value(i)))
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .and_then(|c| cast(&c, &DataType::Int64))
                .map_err(|e| e.to_string())?;
            let a = ms.as_primitive::<Int64Type>();
            each(a, &|i| {
                Value::String(tollgate_decision::rfc3339_ms(a.value(i)))
            })
        }
        _ => {
            let c = cast(c, &DataType::Utf8).map_err(|e| e.to_string())?;
            let a = c.as_string::<i32>();
            each(a, &|i| Value::String(a.value(i).to_owned()))
        }
    };
    Ok(values)
}
