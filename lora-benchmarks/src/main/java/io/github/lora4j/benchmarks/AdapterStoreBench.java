package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.serve.AdapterStore;
import io.github.lora4j.serve.AdapterStoreException;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The adapter store under a Zipf request stream: {@code --adapters} PEFT adapters on disk over a two-module base
 * ({@code l0, l1: [dim, dim]}, rank {@code --rank}), served through an {@link AdapterStore} whose budget holds
 * {@code --budget} adapters, against the same batches through a store that holds every adapter (all resident,
 * loaded before timing starts).
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.AdapterStoreBench --out DIR
 * </pre>
 *
 * <p>Each batch has {@code --rows} rows; each row names an adapter drawn from a Zipf distribution of exponent
 * {@code --zipf} over the adapters (rank {@code k} has weight {@code 1/k^s}; the ranks are shuffled over the names).
 * A batch is {@code store.batch(rows)}, the two-layer forward {@code l1(l0(x))}, {@code close()}: the time includes
 * admission, the loads of missing adapters (reading their files) and the evictions. The two stores run the same
 * batches <em>interleaved</em>, batch by batch, the order alternating, so machine noise hits both alike. The first
 * {@code --warmup} batches fill the budgeted store and are not timed. Reports the hit rate (per adapter and batch,
 * and per row), the throughput of the budgeted store against the all-resident one, and the p50/p99 time per batch,
 * into {@code report.md} and {@code batches.csv} in {@code --out}.
 */
public final class AdapterStoreBench {

    static final String L0 = "l0";
    static final String L1 = "l1";

    static final String USAGE = """
            Usage: java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.AdapterStoreBench [options]

            A Zipf request stream through an AdapterStore under a budget, against all adapters resident.

            Options:
              --adapters N   adapters written to disk and registered           default 10000
              --budget B     adapters the budgeted store holds                  default 500
              --dim D        base modules l0, l1: [D, D]                        default 256
              --rank R       adapter rank                                       default 8
              --rows N       rows per batch                                     default 32
              --zipf S       Zipf exponent of adapter popularity                default 1.0
              --warmup N     untimed batches first                              default 1000
              --batches N    timed batches                                      default 3000
              --seed S       seed of weights and requests                       default 2026
              --out DIR      where report.md and batches.csv go (required)
              --help         print this and exit
            """;

    private AdapterStoreBench() {
    }

    /**
     * What to run.
     *
     * @param adapters adapters on disk
     * @param budget   adapters the budgeted store holds
     * @param dim      base module size
     * @param rank     adapter rank
     * @param rows     rows per batch
     * @param zipf     Zipf exponent
     * @param warmup   untimed batches
     * @param batches  timed batches
     * @param seed     seed
     * @param out      output folder
     */
    record Options(int adapters, int budget, int dim, int rank, int rows, double zipf, int warmup, int batches,
                   long seed, Path out) {

        static Options parse(String[] args) {
            int adapters = 10_000;
            int budget = 500;
            int dim = 256;
            int rank = 8;
            int rows = 32;
            double zipf = 1.0;
            int warmup = 1000;
            int batches = 3000;
            long seed = 2026;
            Path out = null;
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.equals("--help")) {
                    return null;
                }
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("option " + a + " expects a value");
                }
                String v = args[++i];
                switch (a) {
                    case "--adapters" -> adapters = Integer.parseInt(v);
                    case "--budget" -> budget = Integer.parseInt(v);
                    case "--dim" -> dim = Integer.parseInt(v);
                    case "--rank" -> rank = Integer.parseInt(v);
                    case "--rows" -> rows = Integer.parseInt(v);
                    case "--zipf" -> zipf = Double.parseDouble(v);
                    case "--warmup" -> warmup = Integer.parseInt(v);
                    case "--batches" -> batches = Integer.parseInt(v);
                    case "--seed" -> seed = Long.parseLong(v);
                    case "--out" -> out = Path.of(v);
                    default -> throw new IllegalArgumentException("unknown option " + a + "\n" + USAGE);
                }
            }
            if (out == null) {
                throw new IllegalArgumentException("--out DIR is required\n" + USAGE);
            }
            if (adapters < 1 || budget < 1 || budget > adapters || dim < 1 || rank < 1 || rank > dim || rows < 1
                    || !(zipf >= 0) || warmup < 0 || batches < 1) {
                throw new IllegalArgumentException("expected 1 <= budget <= adapters, 1 <= rank <= dim, rows >= 1, "
                        + "zipf >= 0, warmup >= 0, batches >= 1; got " + Arrays.toString(args));
            }
            return new Options(adapters, budget, dim, rank, rows, zipf, warmup, batches, seed, out);
        }
    }

    /**
     * Entry point.
     *
     * @param args see {@link #USAGE}
     * @throws Exception if writing the adapters or the report fails
     */
    public static void main(String[] args) throws Exception {
        Options o = Options.parse(args);
        if (o == null) {
            System.out.print(USAGE);
            return;
        }
        Files.createDirectories(o.out());
        Path dir = Files.createTempDirectory("lora4j-store-bench");
        try {
            run(o, dir, System.out);
        } finally {
            deleteTree(dir);
        }
    }

    /** The base both stores serve: the same W in both, LoRA applied, eval mode. */
    static LoraModel base(int dim, long seed) {
        LoraModel m = LoraModel.builder()
                .linear(L0, Nd4j.randn(seed, new long[] {dim, dim}).castTo(DataType.FLOAT).muli(1.0 / Math.sqrt(dim)),
                        null)
                .linear(L1, Nd4j.randn(seed + 1, new long[] {dim, dim}).castTo(DataType.FLOAT)
                        .muli(1.0 / Math.sqrt(dim)), null)
                .build();
        m.applyLora(LoraConfig.builder().rank(1).build(), List.of(L0, L1));
        return m.eval();
    }

    /** Writes {@code count} rank-{@code rank} adapters for {@link #base} into {@code dir/a00000 ...}; their paths. */
    static Path[] writeAdapters(Path dir, int count, int dim, int rank, long seed) throws IOException {
        LoraModel maker = base(dim, seed);
        Path[] dirs = new Path[count];
        for (int i = 0; i < count; i++) {
            maker.addAdapter("x", LoraConfig.builder().rank(rank).alpha(2 * rank).build());
            long s = seed * 1_000_003L + 2L * i;
            for (LoraLinear layer : maker.loraModules().values()) {
                layer.setAdapterWeights("x",
                        Nd4j.randn(s++, new long[] {rank, dim}).castTo(DataType.FLOAT).muli(0.05),
                        Nd4j.randn(s++, new long[] {dim, rank}).castTo(DataType.FLOAT).muli(0.05));
            }
            dirs[i] = dir.resolve(String.format(Locale.ROOT, "a%05d", i));
            maker.save(dirs[i], "x");
            maker.deleteAdapter("x");
        }
        return dirs;
    }

    /** Zipf sampler over {@code 0 .. n-1}: index {@code k} has weight {@code 1/(k+1)^s}. */
    static final class Zipf {
        private final double[] cdf;

        Zipf(int n, double s) {
            cdf = new double[n];
            double sum = 0;
            for (int k = 0; k < n; k++) {
                sum += 1.0 / Math.pow(k + 1, s);
                cdf[k] = sum;
            }
            for (int k = 0; k < n; k++) {
                cdf[k] /= sum;
            }
        }

        int next(SplittableRandom rng) {
            int i = Arrays.binarySearch(cdf, rng.nextDouble());
            return Math.min(i >= 0 ? i : -i - 1, cdf.length - 1);
        }
    }

    /** Runs the benchmark with adapters written under {@code dir}; writes the report into {@code o.out()}. */
    static void run(Options o, Path dir, PrintStream log) throws IOException, AdapterStoreException {
        long t0 = System.nanoTime();
        Path[] dirs = writeAdapters(dir, o.adapters(), o.dim(), o.rank(), o.seed());
        double writeSeconds = (System.nanoTime() - t0) / 1e9;
        log.printf(Locale.ROOT, "wrote %,d adapters in %.1f s%n", o.adapters(), writeSeconds);

        long adapterBytes = 4L * o.rank() * (2L * o.dim() + 2L * o.dim());
        AdapterStore budgeted = new AdapterStore(base(o.dim(), o.seed()), o.budget() * adapterBytes);
        AdapterStore all = new AdapterStore(base(o.dim(), o.seed()), (long) o.adapters() * adapterBytes);
        String[] names = new String[o.adapters()];
        for (int i = 0; i < names.length; i++) {
            names[i] = String.format(Locale.ROOT, "a%05d", i);
        }
        long r0 = System.nanoTime();
        for (int i = 0; i < names.length; i++) {
            budgeted.register(names[i], dirs[i]);
        }
        double registerSeconds = (System.nanoTime() - r0) / 1e9;
        for (int i = 0; i < names.length; i++) {
            all.register(names[i], dirs[i]);
        }
        long l0 = System.nanoTime();
        for (int from = 0; from < names.length; from += 256) {
            all.batch(Arrays.copyOfRange(names, from, Math.min(names.length, from + 256))).close();
        }
        double loadAllSeconds = (System.nanoTime() - l0) / 1e9;
        log.printf(Locale.ROOT, "registered in %.3f s; all %,d loaded in %.1f s%n", registerSeconds, o.adapters(),
                loadAllSeconds);

        // Popularity rank -> adapter, shuffled so that rank is not file order.
        SplittableRandom rng = new SplittableRandom(o.seed());
        int[] byRank = new int[o.adapters()];
        for (int i = 0; i < byRank.length; i++) {
            byRank[i] = i;
        }
        for (int i = byRank.length - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            int t = byRank[i];
            byRank[i] = byRank[j];
            byRank[j] = t;
        }
        Zipf zipf = new Zipf(o.adapters(), o.zipf());
        INDArray x = Nd4j.randn(o.seed() + 7, new long[] {o.rows(), o.dim()}).castTo(DataType.FLOAT);

        double[] tBudget = new double[o.batches()];
        double[] tAll = new double[o.batches()];
        int[] distinct = new int[o.batches()];
        AdapterStore.Stats atStart = null;
        for (int b = -o.warmup(); b < o.batches(); b++) {
            if (b == 0) {
                atStart = budgeted.stats();
            }
            String[] rows = new String[o.rows()];
            Set<String> seen = new HashSet<>();
            for (int i = 0; i < rows.length; i++) {
                rows[i] = names[byRank[zipf.next(rng)]];
                seen.add(rows[i]);
            }
            double first;
            double second;
            boolean budgetFirst = (b & 1) == 0;
            first = timeBatch(budgetFirst ? budgeted : all, rows, x);
            second = timeBatch(budgetFirst ? all : budgeted, rows, x);
            if (b >= 0) {
                tBudget[b] = budgetFirst ? first : second;
                tAll[b] = budgetFirst ? second : first;
                distinct[b] = seen.size();
            }
        }
        AdapterStore.Stats end = budgeted.stats();
        AdapterStore.Stats allEnd = all.stats();
        budgeted.close();
        all.close();
        if (allEnd.loads() != o.adapters()) {
            throw new IllegalStateException("the all-resident store loaded " + allEnd.loads() + " adapters, expected "
                    + o.adapters() + ": it was not all resident");
        }
        Result r = new Result(o, atStart, end, tBudget, tAll, distinct, writeSeconds, registerSeconds, loadAllSeconds,
                adapterBytes);
        String report = r.markdown();
        log.print(report);
        Files.writeString(o.out().resolve("report.md"), report);
        StringBuilder csv = new StringBuilder("batch,distinct_adapters,budgeted_us,all_resident_us\n");
        for (int b = 0; b < o.batches(); b++) {
            csv.append(String.format(Locale.ROOT, "%d,%d,%.1f,%.1f%n", b, distinct[b], tBudget[b], tAll[b]));
        }
        Files.writeString(o.out().resolve("batches.csv"), csv);
    }

    /** One batch through {@code store}: admission (and loads), {@code l1(l0(x))}, close; microseconds. */
    private static double timeBatch(AdapterStore store, String[] rows, INDArray x) throws AdapterStoreException {
        long t = System.nanoTime();
        try (AdapterStore.Batch batch = store.batch(rows)) {
            INDArray y = batch.forward(L1, batch.forward(L0, x));
            if (y.rows() != rows.length) {
                throw new IllegalStateException("expected " + rows.length + " rows, got " + y.rows());
            }
        }
        return (System.nanoTime() - t) / 1e3;
    }

    /** The figures of one run. */
    record Result(Options o, AdapterStore.Stats start, AdapterStore.Stats end, double[] budgeted, double[] all,
                  int[] distinct, double writeSeconds, double registerSeconds, double loadAllSeconds,
                  long adapterBytes) {

        String markdown() {
            long hits = end.hits() - start.hits();
            long misses = end.misses() - start.misses();
            long rowHits = end.rowHits() - start.rowHits();
            long rowMisses = end.rowMisses() - start.rowMisses();
            double sumB = Arrays.stream(budgeted).sum();
            double sumA = Arrays.stream(all).sum();
            double[] ratio = new double[budgeted.length];
            for (int i = 0; i < ratio.length; i++) {
                ratio[i] = budgeted[i] / all[i];
            }
            StringBuilder sb = new StringBuilder();
            sb.append(String.format(Locale.ROOT, "# Adapter store: Zipf(%.2f) requests over %,d adapters, budget %,d"
                            + " adapters%n%n", o.zipf(), o.adapters(), o.budget()));
            sb.append(String.format(Locale.ROOT, "Base: two modules [%d, %d] (float32), rank %d, %,d bytes per adapter "
                            + "resident; budget %,d bytes. %,d batches of %d rows timed after %,d untimed; the two "
                            + "stores interleaved batch by batch. Mean distinct adapters per batch: %.1f.%n%n",
                    o.dim(), o.dim(), o.rank(), adapterBytes, o.budget() * adapterBytes, o.batches(), o.rows(),
                    o.warmup(), Arrays.stream(distinct).average().orElse(Double.NaN)));
            sb.append("| figure | value |\n|---|---:|\n");
            sb.append(String.format(Locale.ROOT, "| hit rate, per adapter and batch | %.3f (%,d hits, %,d misses) |%n",
                    (double) hits / (hits + misses), hits, misses));
            sb.append(String.format(Locale.ROOT, "| hit rate, per row (request) | %.3f |%n",
                    (double) rowHits / (rowHits + rowMisses)));
            sb.append(String.format(Locale.ROOT, "| loads / evictions while timed | %,d / %,d |%n",
                    end.loads() - start.loads(), end.evictions() - start.evictions()));
            sb.append(String.format(Locale.ROOT, "| throughput, budgeted | %,.0f rows/s |%n",
                    o.rows() * budgeted.length / (sumB / 1e6)));
            sb.append(String.format(Locale.ROOT, "| throughput, all resident | %,.0f rows/s |%n",
                    o.rows() * all.length / (sumA / 1e6)));
            sb.append(String.format(Locale.ROOT, "| throughput budgeted / all resident | %.3f |%n", sumA / sumB));
            sb.append(String.format(Locale.ROOT, "| per-batch time ratio budgeted / all resident, median (IQR) | "
                            + "%.2f (%.2f–%.2f) |%n", Samples.quantile(ratio.clone(), 0.5),
                    Samples.quantile(ratio.clone(), 0.25), Samples.quantile(ratio.clone(), 0.75)));
            sb.append("\n| time per batch | p50 | p25–p75 | p99 | max |\n|---|---:|---:|---:|---:|\n");
            sb.append(row("budgeted", budgeted));
            sb.append(row("all resident", all));
            sb.append(String.format(Locale.ROOT, "%nSet-up (not timed above): writing the adapters %.1f s, registering "
                            + "%,d in %.3f s, loading all of them into the all-resident store %.1f s.%n",
                    writeSeconds, o.adapters(), registerSeconds, loadAllSeconds));
            return sb.toString();
        }

        private static String row(String name, double[] us) {
            return String.format(Locale.ROOT, "| %s | %.2f ms | %.2f–%.2f ms | %.2f ms | %.2f ms |%n", name,
                    Samples.quantile(us.clone(), 0.5) / 1e3, Samples.quantile(us.clone(), 0.25) / 1e3,
                    Samples.quantile(us.clone(), 0.75) / 1e3, Samples.quantile(us.clone(), 0.99) / 1e3,
                    Samples.quantile(us.clone(), 1.0) / 1e3);
        }
    }

    private static void deleteTree(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
