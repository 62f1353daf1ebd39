//! Builders of queries and records for the tests of location and of the
//! dial machine.

use super::select::{NaptrRecord, SrvRecord};
use super::{Query, QueryId, Record, RecordData, RecordType};

pub(crate) fn query(id: u32, name: &str, rtype: RecordType) -> Query {
    Query {
        id: QueryId(id),
        name: name.into(),
        rtype,
    }
}

/// A NAPTR record with the `s` flag and preference 50, as hickory renders it.
pub(crate) fn naptr(order: u16, services: &str, replacement: &str) -> Record {
    Record {
        data: RecordData::Naptr(NaptrRecord {
            order,
            preference: 50,
            flags: "s".into(),
            services: services.into(),
            replacement: replacement.into(),
        }),
        text: format!("{order} 50 \"s\" \"{services}\" \"\" {replacement}."),
    }
}

/// An SRV record, as hickory renders it.
pub(crate) fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record {
        data: RecordData::Srv(SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }),
        text: format!("{priority} {weight} {port} {target}."),
    }
}

/// An A or AAAA record.
pub(crate) fn addr(ip: &str) -> Record {
    Record::address(ip.parse().unwrap())
}
