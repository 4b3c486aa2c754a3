/**
 * Counters and histograms for the hot path. prom-client's own children re-hash and re-validate
 * their labels on every `inc`/`observe` (a string built per call); these keep each label set's
 * value in a plain field, bound once at construction, so recording is a field update (a histogram
 * also scans its few buckets) and allocates nothing. The registry reads them only at scrape time,
 * through prom-client's metric interface (`get()`), which is where label objects are built.
 *
 * Invariant: a family's label sets are fixed when its children are made (at construction of the
 * part that owns it); nothing adds a series later, so the exposition's size is bounded.
 */
import type { Registry } from "prom-client";

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** The object prom-client's registry formats (what its own metrics' `get()` returns). */
interface CustomMetric {
  name: string;
  help: string;
  type: "counter" | "histogram";
  aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: "sum" }>;
}

function register(registry: Registry, metric: CustomMetric): void {
  (registry as unknown as { registerMetric(m: CustomMetric): void }).registerMetric(metric);
}

function labelsOf(names: readonly string[], values: readonly string[]): Record<string, string> {
  if (names.length !== values.length) throw new Error(`expected ${names.length} label values (${names.join(", ")}), got ${values.length}`);
  const labels: Record<string, string> = {};
  names.forEach((n, i) => (labels[n] = values[i]!));
  return labels;
}

export class HotCounterChild {
  value = 0;
  constructor(readonly labels: Readonly<Record<string, string>>) {}
  inc(n = 1): void {
    this.value += n;
  }
}

export class HotCounter {
  private readonly children: HotCounterChild[] = [];

  constructor(registry: Registry, readonly name: string, help: string, private readonly labelNames: readonly string[] = []) {
    register(registry, {
      name,
      help,
      type: "counter",
      aggregator: "sum",
      get: async () => ({ name, help, type: "counter", aggregator: "sum", values: this.children.map((c) => ({ labels: { ...c.labels }, value: c.value })) }),
    });
  }

  /** The child of one label set (made at set-up, never on the hot path). */
  child(...labelValues: string[]): HotCounterChild {
    const c = new HotCounterChild(labelsOf(this.labelNames, labelValues));
    this.children.push(c);
    return c;
  }
}

export class HotHistogramChild {
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly labels: Readonly<Record<string, string>>, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]! += 1;
    this.sum += value;
    this.count += 1;
  }
}

export class HotHistogram {
  private readonly children: HotHistogramChild[] = [];

  constructor(registry: Registry, readonly name: string, help: string, private readonly bounds: readonly number[], private readonly labelNames: readonly string[] = []) {
    register(registry, { name, help, type: "histogram", aggregator: "sum", get: async () => ({ name, help, type: "histogram", aggregator: "sum", values: this.values() }) });
  }

  child(...labelValues: string[]): HotHistogramChild {
    const c = new HotHistogramChild(labelsOf(this.labelNames, labelValues), this.bounds);
    this.children.push(c);
    return c;
  }

  private values(): MetricValue[] {
    const out: MetricValue[] = [];
    for (const c of this.children) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += c.counts[i]!;
        out.push({ labels: { le, ...c.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      out.push({ labels: { le: "+Inf", ...c.labels }, value: c.count, metricName: `${this.name}_bucket` });
      out.push({ labels: { ...c.labels }, value: c.sum, metricName: `${this.name}_sum` });
      out.push({ labels: { ...c.labels }, value: c.count, metricName: `${this.name}_count` });
    }
    return out;
  }
}
