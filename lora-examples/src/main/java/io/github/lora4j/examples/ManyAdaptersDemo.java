package io.github.lora4j.examples;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.serve.AdapterStore;
import io.github.lora4j.serve.AdapterStoreException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import org.knowm.xchart.ChartEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Serving many adapters over one base: a small two-layer base ({@code layers.0}, {@code layers.1}, both
 * {@code [dim, dim]}), {@code adapters} generated PEFT adapters saved to disk (a temporary folder, deleted at the
 * end), and an {@link AdapterStore} that pages them in under a budget.
 *
 * <ol>
 *   <li><b>Request stream.</b> Batches of {@code streamRows} rows, each row naming an adapter drawn from a Zipf
 *   distribution (a few tenants are busy, most are rare), through a store whose budget holds
 *   {@code streamBudget} adapters. Prints the throughput (rows per second) and the hit rate.</li>
 *   <li><b>Distinct adapters per batch.</b> A batch of {@code sweepRows} rows naming {@code K} distinct adapters
 *   (rows dealt round robin), for {@code K = 1 … adapters}, timed interleaved with the same batch naming one adapter,
 *   through a store that holds them all. The chart plots the median time per batch against {@code K} beside the
 *   one-adapter line.</li>
 * </ol>
 *
 * <p>Run: {@code mvn -B -q -Pexample -Dexample=io.github.lora4j.examples.ManyAdaptersDemo -DskipTests -pl
 * lora-examples -am package}; the chart goes to {@code lora-examples/target/examples/many-adapters.png} (an argument
 * overrides the path). About a minute on 2 cores.
 */
public final class ManyAdaptersDemo {

    /** The base's first module. */
    public static final String L0 = "layers.0";
    /** The base's second module. */
    public static final String L1 = "layers.1";

    private ManyAdaptersDemo() {
    }

    /**
     * What to run.
     *
     * @param dim           base module size ({@code [dim, dim]} each)
     * @param rank          adapter rank
     * @param adapters      adapters generated and registered
     * @param streamBudget  adapters the stream's store holds
     * @param streamRows    rows per batch of the stream
     * @param streamBatches batches of the stream
     * @param zipf          Zipf exponent of the stream's popularity
     * @param sweepRows     rows per batch of the sweep ({@code >=} the largest K)
     * @param ks            distinct adapters per batch in the sweep, ascending, each {@code <= adapters}
     * @param rounds        timed rounds per K (after one warm-up round)
     * @param seed          seed of weights and requests
     */
    public record Settings(int dim, int rank, int adapters, int streamBudget, int streamRows, int streamBatches,
                           double zipf, int sweepRows, int[] ks, int rounds, long seed) {

        /** Checks the settings. */
        public Settings {
            ks = ks.clone();
            if (dim < 1 || rank < 1 || rank > dim || adapters < 1 || streamBudget < 1 || streamRows < 1
                    || streamBatches < 1 || !(zipf >= 0) || rounds < 1 || ks.length == 0) {
                throw new IllegalArgumentException("expected positive sizes, rank <= dim, zipf >= 0 and some K; got "
                        + "dim " + dim + ", rank " + rank + ", adapters " + adapters + ", streamBudget " + streamBudget
                        + ", streamRows " + streamRows + ", streamBatches " + streamBatches + ", zipf " + zipf
                        + ", rounds " + rounds + ", ks " + Arrays.toString(ks));
            }
            for (int i = 0; i < ks.length; i++) {
                if (ks[i] < 1 || ks[i] > adapters || ks[i] > sweepRows || (i > 0 && ks[i] <= ks[i - 1])) {
                    throw new IllegalArgumentException("ks: expected ascending values in 1.." + Math.min(adapters,
                            sweepRows) + " (adapters, sweepRows), got " + Arrays.toString(ks));
                }
            }
        }

        /** {@return the distinct adapters per batch of the sweep; a copy} */
        @Override
        public int[] ks() {
            return ks.clone();
        }

        /** The demo's defaults: 1,000 adapters of rank 8 over two 256² modules. */
        public static Settings defaults() {
            return new Settings(256, 8, 1000, 200, 32, 2000, 1.0, 1000,
                    new int[] {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}, 7, 2026);
        }
    }

    /**
     * The request stream's figures.
     *
     * @param batches          batches run
     * @param rows             rows served
     * @param seconds          wall time of the batches (admission, loads, both forwards, close)
     * @param stats            the store's statistics at the end
     * @param maxResident      most adapters resident after any batch
     * @param maxResidentBytes most bytes resident after any batch
     * @param distinctNamed    distinct adapters the stream named
     */
    public record Stream(int batches, long rows, double seconds, AdapterStore.Stats stats, int maxResident,
                         long maxResidentBytes, int distinctNamed) {

        /** {@return rows per second} */
        public double rowsPerSecond() {
            return rows / seconds;
        }
    }

    /**
     * One point of the sweep.
     *
     * @param k            distinct adapters the mixed batch named (as the store pinned them)
     * @param mixedMillis  median time of the mixed batch
     * @param singleMillis median time of the same batch naming one adapter, interleaved with it
     */
    public record Point(int k, double mixedMillis, double singleMillis) {

        /** {@return mixed / single} */
        public double ratio() {
            return mixedMillis / singleMillis;
        }
    }

    /**
     * What the demo measured.
     *
     * @param settings what was run
     * @param stream   the request stream
     * @param sweep    one point per K, in the order of {@link Settings#ks()}
     */
    public record Result(Settings settings, Stream stream, List<Point> sweep) {
    }

    /**
     * Entry point: runs the defaults, prints the figures and writes the chart.
     *
     * @param args optionally the chart's path
     * @throws Exception if the adapters or the chart cannot be written
     */
    public static void main(String[] args) throws Exception {
        Path chart = args.length > 0 ? Path.of(args[0]) : ExampleOutput.file("many-adapters.png");
        Settings s = Settings.defaults();
        System.out.printf(Locale.ROOT, "Many adapters: base 2 × [%d, %d], %,d adapters of rank %d on disk%n",
                s.dim(), s.dim(), s.adapters(), s.rank());
        Path dir = Files.createTempDirectory("lora4j-many-adapters");
        Result r;
        try {
            r = run(s, dir);
        } finally {
            deleteTree(dir);
        }
        System.out.print(report(r));
        writeChart(r, chart);
        System.out.println("Chart: " + chart.toAbsolutePath());
    }

    /**
     * Runs the demo with its adapters written into {@code dir}.
     *
     * @param s   the settings
     * @param dir an empty folder for the adapters
     * @return the figures
     * @throws IOException           if an adapter cannot be written
     * @throws AdapterStoreException if the store cannot serve a batch (it should always)
     */
    public static Result run(Settings s, Path dir) throws IOException, AdapterStoreException {
        Path[] dirs = writeAdapters(s, dir);
        String[] names = new String[dirs.length];
        for (int i = 0; i < names.length; i++) {
            names[i] = dirs[i].getFileName().toString();
        }
        long adapterBytes = 4L * s.rank() * 4L * s.dim();          // r·(in + out) floats in each of two modules
        Stream stream;
        try (AdapterStore store = new AdapterStore(base(s), s.streamBudget() * adapterBytes)) {
            for (int i = 0; i < names.length; i++) {
                store.register(names[i], dirs[i]);
            }
            stream = stream(s, store, names);
        }
        List<Point> sweep = new ArrayList<>();
        try (AdapterStore store = new AdapterStore(base(s), s.adapters() * adapterBytes)) {
            for (int i = 0; i < names.length; i++) {
                store.register(names[i], dirs[i]);
            }
            INDArray x = Nd4j.randn(s.seed() + 3, new long[] {s.sweepRows(), s.dim()}).castTo(DataType.FLOAT);
            String[] single = new String[s.sweepRows()];
            Arrays.fill(single, names[0]);
            for (int k : s.ks()) {
                String[] mixed = new String[s.sweepRows()];
                for (int i = 0; i < mixed.length; i++) {
                    mixed[i] = names[i % k];                          // K distinct adapters, dealt round robin
                }
                double[] tm = new double[s.rounds()];
                double[] ts = new double[s.rounds()];
                int pinned = 0;
                for (int round = -1; round < s.rounds(); round++) {   // round -1 loads and warms up, untimed
                    boolean mixedFirst = (round & 1) == 0;
                    double a = time(store, mixedFirst ? mixed : single, x);
                    double b = time(store, mixedFirst ? single : mixed, x);
                    if (round >= 0) {
                        tm[round] = mixedFirst ? a : b;
                        ts[round] = mixedFirst ? b : a;
                    }
                }
                try (AdapterStore.Batch batch = store.batch(mixed)) {
                    pinned = batch.adapters().size();
                }
                sweep.add(new Point(pinned, median(tm), median(ts)));
            }
        }
        return new Result(s, stream, List.copyOf(sweep));
    }

    private static Stream stream(Settings s, AdapterStore store, String[] names) throws AdapterStoreException {
        SplittableRandom rng = new SplittableRandom(s.seed());
        double[] cdf = new double[names.length];
        double sum = 0;
        for (int k = 0; k < cdf.length; k++) {
            sum += 1.0 / Math.pow(k + 1, s.zipf());                 // popularity rank k: weight 1 / (k+1)^s
            cdf[k] = sum;
        }
        INDArray x = Nd4j.randn(s.seed() + 5, new long[] {s.streamRows(), s.dim()}).castTo(DataType.FLOAT);
        java.util.Set<String> named = new java.util.HashSet<>();
        int maxResident = 0;
        long maxBytes = 0;
        long t0 = System.nanoTime();
        for (int b = 0; b < s.streamBatches(); b++) {
            String[] rows = new String[s.streamRows()];
            for (int i = 0; i < rows.length; i++) {
                int at = Arrays.binarySearch(cdf, rng.nextDouble() * sum);
                rows[i] = names[Math.min(at >= 0 ? at : -at - 1, names.length - 1)];
                named.add(rows[i]);
            }
            // The store's whole API for a request: open a batch (loads what is missing), run the layers, close.
            try (AdapterStore.Batch batch = store.batch(rows)) {
                batch.forward(L1, batch.forward(L0, x));
            }
            maxResident = Math.max(maxResident, store.residentAdapters().size());
            maxBytes = Math.max(maxBytes, store.residentBytes());
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        return new Stream(s.streamBatches(), (long) s.streamBatches() * s.streamRows(), seconds, store.stats(),
                maxResident, maxBytes, named.size());
    }

    private static double time(AdapterStore store, String[] rows, INDArray x) throws AdapterStoreException {
        long t = System.nanoTime();
        try (AdapterStore.Batch batch = store.batch(rows)) {
            batch.forward(L1, batch.forward(L0, x));
        }
        return (System.nanoTime() - t) / 1e6;
    }

    private static double median(double[] xs) {
        double[] c = xs.clone();
        Arrays.sort(c);
        return c.length % 2 == 1 ? c[c.length / 2] : (c[c.length / 2 - 1] + c[c.length / 2]) / 2;
    }

    /** The base: two FLOAT modules {@code [dim, dim]}, LoRA applied to both, eval mode. */
    static LoraModel base(Settings s) {
        double scale = 1.0 / Math.sqrt(s.dim());
        LoraModel m = LoraModel.builder()
                .linear(L0, Nd4j.randn(s.seed(), new long[] {s.dim(), s.dim()}).castTo(DataType.FLOAT).muli(scale),
                        null)
                .linear(L1, Nd4j.randn(s.seed() + 1, new long[] {s.dim(), s.dim()}).castTo(DataType.FLOAT)
                        .muli(scale), null)
                .build();
        m.applyLora(LoraConfig.builder().rank(1).build(), List.of(L0, L1));
        return m.eval();
    }

    /** Saves {@code s.adapters()} PEFT adapters (random A and B) into {@code dir/tenant-0000 ...}; their folders. */
    static Path[] writeAdapters(Settings s, Path dir) throws IOException {
        LoraModel maker = base(s);
        Path[] dirs = new Path[s.adapters()];
        for (int i = 0; i < dirs.length; i++) {
            maker.addAdapter("tenant", LoraConfig.builder().rank(s.rank()).alpha(2 * s.rank()).build());
            long seed = s.seed() * 1_000_003L + 2L * i;
            for (LoraLinear layer : maker.loraModules().values()) {
                layer.setAdapterWeights("tenant",
                        Nd4j.randn(seed++, new long[] {s.rank(), s.dim()}).castTo(DataType.FLOAT).muli(0.05),
                        Nd4j.randn(seed++, new long[] {s.dim(), s.rank()}).castTo(DataType.FLOAT).muli(0.05));
            }
            dirs[i] = dir.resolve(String.format(Locale.ROOT, "tenant-%04d", i));
            maker.save(dirs[i], "tenant");
            maker.deleteAdapter("tenant");
        }
        return dirs;
    }

    /**
     * The figures as text.
     *
     * @param r what the demo measured
     * @return the stream's throughput and hit rate, then the sweep's table
     */
    public static String report(Result r) {
        Stream st = r.stream();
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "%nRequest stream: %,d batches of %d rows, Zipf(%.2f) over %,d adapters "
                        + "(%,d named), budget %,d adapters%n", st.batches(), r.settings().streamRows(),
                r.settings().zipf(), r.settings().adapters(), st.distinctNamed(), r.settings().streamBudget()));
        sb.append(String.format(Locale.ROOT, "  throughput %,.0f rows/s (%.2f ms per batch), hit rate %.3f per "
                        + "adapter and batch, %.3f per row; %,d loads, %,d evictions, at most %,d resident%n",
                st.rowsPerSecond(), 1e3 * st.seconds() / st.batches(), st.stats().hitRate(),
                st.stats().rowHitRate(), st.stats().loads(), st.stats().evictions(), st.maxResident()));
        sb.append(String.format(Locale.ROOT, "%nOne batch of %d rows, K distinct adapters (all resident), median of %d"
                + " rounds:%n", r.settings().sweepRows(), r.settings().rounds()));
        sb.append(String.format(Locale.ROOT, "  %6s  %10s  %12s  %6s%n", "K", "mixed ms", "one adapter", "ratio"));
        for (Point p : r.sweep()) {
            sb.append(String.format(Locale.ROOT, "  %,6d  %10.2f  %12.2f  %5.2f×%n", p.k(), p.mixedMillis(),
                    p.singleMillis(), p.ratio()));
        }
        return sb.toString();
    }

    /**
     * Writes the sweep's chart (PNG): median time per batch against K, beside the one-adapter line.
     *
     * @param r    what the demo measured
     * @param file the PNG to write; its folder is created
     * @throws IOException if it cannot be written
     */
    public static void writeChart(Result r, Path file) throws IOException {
        System.setProperty("java.awt.headless", "true");
        XYChart chart = new XYChartBuilder().width(900).height(560)
                .title(String.format(Locale.ROOT, "Time per batch of %d rows against distinct adapters (2 × [%d, %d],"
                        + " r = %d)", r.settings().sweepRows(), r.settings().dim(), r.settings().dim(),
                        r.settings().rank()))
                .xAxisTitle("distinct adapters in the batch (K)").yAxisTitle("median time per batch (ms)").build();
        chart.getStyler().setXAxisLogarithmic(true);
        chart.getStyler().setLegendPosition(Styler.LegendPosition.OutsideS);
        chart.getStyler().setLegendLayout(Styler.LegendLayout.Horizontal);
        chart.getStyler().setXAxisDecimalPattern("#,##0");
        chart.getStyler().setYAxisMin(0.0);
        double[] k = r.sweep().stream().mapToDouble(Point::k).toArray();
        chart.addSeries("K distinct adapters", k, r.sweep().stream().mapToDouble(Point::mixedMillis).toArray())
                .setMarker(SeriesMarkers.CIRCLE);
        chart.addSeries("one adapter (same rows)", k,
                r.sweep().stream().mapToDouble(Point::singleMillis).toArray()).setMarker(SeriesMarkers.NONE);
        Path parent = file.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = parent.resolve(file.getFileName() + ".tmp");
        try {
            Files.write(tmp, ChartEncoder.getBytes(chart, "png"));
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static void deleteTree(Path dir) {
        try (java.util.stream.Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
