//! Prometheus metrics of one hq-ingest instance (text exposition via `prometheus-client`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Counters exported at `/metrics`.
pub struct Metrics {
    registry: Registry,
    batches: Family<Labels, Counter>,
    rejections: Family<Labels, Counter>,
    records: Counter,
    last_contact: Family<Labels, Gauge>,
    backlog: Family<Labels, Gauge>,
}

fn kiosk_label(kiosk: &str) -> Labels {
    vec![("kiosk".to_owned(), kiosk.to_owned())]
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let batches = Family::<Labels, Counter>::default();
        let rejections = Family::<Labels, Counter>::default();
        let records = Counter::default();
        registry.register(
            "hq_batches",
            "Batches processed, by outcome (accepted, duplicate, rejected)",
            batches.clone(),
        );
        registry.register(
            "hq_rejections",
            "Rejected batches by error code",
            rejections.clone(),
        );
        registry.register("hq_records_stored", "Records committed", records.clone());
        let last_contact = Family::<Labels, Gauge>::default();
        let backlog = Family::<Labels, Gauge>::default();
        registry.register(
            "hq_kiosk_last_contact_timestamp_seconds",
            "Unix time of each kiosk's last batch (label: the kiosk id of its client certificate)",
            last_contact.clone(),
        );
        registry.register(
            "hq_kiosk_backlog_records",
            "Records waiting in each kiosk's outbox behind its last batch, as the batch reports",
            backlog.clone(),
        );
        Self {
            registry,
            batches,
            rejections,
            records,
            last_contact,
            backlog,
        }
    }

    /// Count a batch outcome.
    pub fn batch_outcome(&self, outcome: &str) {
        self.batches
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// Count a rejection.
    pub fn rejection(&self, code: &str) {
        self.batch_outcome("rejected");
        self.rejections
            .get_or_create(&vec![("code".to_owned(), code.to_owned())])
            .inc();
    }

    /// A batch arrived from `kiosk` (the CN of its verified client certificate: the only
    /// label, never a personal value) at Unix time `at`.
    pub fn kiosk_contact(&self, kiosk: &str, at: i64) {
        self.last_contact.get_or_create(&kiosk_label(kiosk)).set(at);
    }

    /// The backlog `kiosk`'s authenticated batch reports.
    pub fn kiosk_backlog(&self, kiosk: &str, records: u64) {
        self.backlog
            .get_or_create(&kiosk_label(kiosk))
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }

    /// Count stored records.
    pub fn records_stored(&self, n: u64) {
        self.records.inc_by(n);
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
