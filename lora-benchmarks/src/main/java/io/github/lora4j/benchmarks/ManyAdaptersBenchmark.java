package io.github.lora4j.benchmarks;

import de.erichseifert.vectorgraphics2d.Document;
import de.erichseifert.vectorgraphics2d.Processors;
import de.erichseifert.vectorgraphics2d.VectorGraphics2D;
import de.erichseifert.vectorgraphics2d.util.PageSize;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MixedBatchStrategies;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import javax.imageio.ImageIO;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.lines.SeriesLines;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

/**
 * Many adapters at once (issue 28), measured interleaved in one process, float32, medians over rounds:
 * <ul>
 *   <li>{@code targets}: a mixed batch whose every row has its own adapter ({@code n = K}) against the same batch
 *       with one adapter, at the two shapes (1024², r = 8, n = K = 1,000; 4096², r = 8, n = K = 256), with
 *       each strategy forced beside the cost model's choice;</li>
 *   <li>{@code sweep}: {@code K = 1 … 1,000} distinct adapters at fixed {@code n} (rows assigned round-robin, then
 *       shuffled), the cost model's choice and every strategy against the one-adapter line; a PNG and SVG plot;</li>
 *   <li>{@code train}: 8 adapters trained in one mixed batch (forward, backward, one {@code LoraTrainer} step with
 *       Adam) against the same 8 trained one after the other on their own rows (8 forwards, backwards and
 *       steps).</li>
 * </ul>
 * Each round runs every variant once, in an order that alternates between rounds, so machine noise hits them alike;
 * ratios are medians of the per-round ratios. It prints a Markdown report and, with {@code --out DIR}, writes it to
 * {@code DIR/report.md} with the plot as {@code DIR/sweep.png} and {@code DIR/sweep.svg}. Only public API is used,
 * except the strategy switch ({@link MixedBatchStrategies}).
 *
 * <pre>
 * flock /tmp/lora4j-bench.lock java -Xmx8g -cp lora-benchmarks/target/benchmarks.jar \
 *     io.github.lora4j.benchmarks.ManyAdaptersBenchmark all --rounds 21 --out lora-benchmarks/results/DATE-many-adapters
 * </pre>
 */
public final class ManyAdaptersBenchmark {

    /** Distinct-adapter counts of the sweep. */
    static final int[] SWEEP_K = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000};

    static final String USAGE = """
            Usage: java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.ManyAdaptersBenchmark \\
                   MODE [--rounds R] [--out DIR] [--sweep-d D] [--sweep-n N]

            MODE: targets | sweep | train | all
              --rounds R     measured rounds per case (after 3 warm-up rounds)       default 15
              --out DIR      also write DIR/report.md (and the sweep's plot)          default: print only
              --sweep-d D    layer size of the sweep, W [D, D]                        default 1024
              --sweep-n N    rows of the sweep's batch (K goes up to N)               default 1000
            """;

    private final int rounds;
    private final StringBuilder report = new StringBuilder();
    private final PrintStream out;

    private ManyAdaptersBenchmark(int rounds, PrintStream out) {
        this.rounds = rounds;
        this.out = out;
    }

    /**
     * Runs the benchmark from the command line.
     *
     * @param args see {@link #USAGE}
     * @throws IOException if the report cannot be written
     */
    public static void main(String[] args) throws IOException {
        if (args.length == 0 || args[0].equals("--help")) {
            System.out.print(USAGE);
            return;
        }
        String mode = args[0];
        if (!List.of("targets", "sweep", "train", "all").contains(mode)) {
            throw new IllegalArgumentException("MODE: expected targets, sweep, train or all, got '" + mode + "'");
        }
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 1; i < args.length; i += 2) {
            if (!List.of("--rounds", "--out", "--sweep-d", "--sweep-n").contains(args[i]) || i + 1 >= args.length) {
                throw new IllegalArgumentException("unexpected '" + args[i] + "' (or a missing value)\n" + USAGE);
            }
            opts.put(args[i], args[i + 1]);
        }
        int rounds = Integer.parseInt(opts.getOrDefault("--rounds", "15"));
        int sweepD = Integer.parseInt(opts.getOrDefault("--sweep-d", "1024"));
        int sweepN = Integer.parseInt(opts.getOrDefault("--sweep-n", "1000"));
        Path dir = opts.containsKey("--out") ? Path.of(opts.get("--out")) : null;
        ManyAdaptersBenchmark b = new ManyAdaptersBenchmark(rounds, System.out);
        b.run(mode, sweepD, sweepN, dir);
    }

    /** Runs {@code mode} ("targets", "sweep", "train" or "all"); writes the report and plot into {@code dir} if given. */
    void run(String mode, int sweepD, int sweepN, Path dir) throws IOException {
        line("# Many adapters at once: interleaved measurements");
        line("");
        line(String.format(Locale.ROOT, "float32, %d measured rounds per case after 3 warm-up rounds; %s; %d cores; "
                        + "load average %.2f at the start", rounds, Runtime.version(),
                Runtime.getRuntime().availableProcessors(), load()));
        line("");
        if (mode.equals("targets") || mode.equals("all")) {
            targets();
        }
        XYChart chart = null;
        if (mode.equals("sweep") || mode.equals("all")) {
            chart = sweep(sweepD, sweepN);
        }
        if (mode.equals("train") || mode.equals("all")) {
            train(1024, 64, 8);
            train(4096, 16, 8);
        }
        line(String.format(Locale.ROOT, "Load average at the end: %.2f", load()));
        if (dir != null) {
            Files.createDirectories(dir);
            Files.writeString(dir.resolve("report.md"), report.toString(), StandardCharsets.UTF_8);
            if (chart != null) {
                writeChart(chart, dir, "sweep");
            }
        }
    }

    private static double load() {
        return ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
    }

    private void line(String s) {
        out.println(s);
        report.append(s).append('\n');
    }

    // ---------------------------------------------------------------- fixtures

    /** A layer {@code W [d, d]} (no bias) with {@code k} adapters {@code t0 … t(k-1)} of rank {@code r}. */
    static LoraLinear layer(int d, int r, int k, long seed) {
        LoraLinear layer = LoraLinear.wrap(Fixtures.weight(d, seed), null, Fixtures.config(r));
        for (int a = 0; a < k; a++) {
            String name = "t" + a;
            layer.addAdapter(name, Fixtures.config(r));
            layer.setAdapterWeights(name, Fixtures.uniform(seed + 2 * a + 1, 1 / Math.sqrt(d), r, d),
                    Fixtures.uniform(seed + 2 * a + 2, 0.01, d, r));
        }
        return layer;
    }

    /** Row i → adapter {@code t(i mod k)}, rows then shuffled (a fixed seed): requests in arrival order. */
    static String[] assignment(int n, int k, long seed) {
        String[] per = new String[n];
        for (int i = 0; i < n; i++) {
            per[i] = "t" + (i % k);
        }
        SplittableRandom rng = new SplittableRandom(seed);
        for (int i = n - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            String t = per[i];
            per[i] = per[j];
            per[j] = t;
        }
        return per;
    }

    /** A variant of a round: its name and the call timed. */
    private record Variant(String name, Runnable call) {
    }

    /** Times {@code variants} interleaved: 3 warm-up rounds, then {@link #rounds}; the order alternates by round. */
    private Map<String, Samples> interleaved(List<Variant> variants) {
        Map<String, Samples> times = new LinkedHashMap<>();
        for (Variant v : variants) {
            times.put(v.name(), new Samples());
        }
        for (int round = -3; round < rounds; round++) {
            for (int j = 0; j < variants.size(); j++) {
                Variant v = variants.get(round % 2 == 0 ? j : variants.size() - 1 - j);
                long t0 = System.nanoTime();
                v.call().run();
                double ms = (System.nanoTime() - t0) / 1e6;
                if (round >= 0) {
                    times.get(v.name()).add(ms);
                }
            }
        }
        MixedBatchStrategies.force(null);
        return times;
    }

    /** A forced strategy's variant, or the cost model's choice for {@code strategy == null}. */
    private static Variant mixed(String strategy, LoraLinear layer, INDArray x, String[] per) {
        return new Variant(strategy == null ? "mixed (cost model)" : strategy, () -> {
            MixedBatchStrategies.force(strategy);
            layer.forward(x, per);
            MixedBatchStrategies.force(null);
        });
    }

    private static String stat(Samples s) {
        return String.format(Locale.ROOT, "%.2f (IQR %.2f–%.2f, min–max %.2f–%.2f)", s.median(), s.p25(), s.p75(),
                s.min(), s.max());
    }

    // ---------------------------------------------------------------- targets

    private void targets() {
        line("## Targets: every row its own adapter, against the same batch with one adapter");
        line("");
        line("| shape | n = K | variant | ms: median (IQR, min–max) | ratio to one adapter: median (IQR, min–max) |"
                + " target |");
        line("|---|---:|---|---|---|---:|");
        target(1024, 1000, 1.25);
        target(4096, 256, 1.10);
        line("");
    }

    private void target(int d, int n, double goal) {
        LoraLinear layer = layer(d, 8, n, d);
        INDArray x = Fixtures.gaussian(d + 7, n, d);
        String[] one = new String[n];
        Arrays.fill(one, "t0");
        String[] per = assignment(n, n, d + 9);
        List<Variant> variants = new ArrayList<>();
        variants.add(new Variant("one adapter", () -> layer.forward(x, one)));
        variants.add(mixed(null, layer, x, per));
        for (String s : MixedBatchStrategies.names()) {
            if (!s.equals("STACKED") || (long) n * 8 * n <= MixedBatchStrategies.stackedMaxElements()) {
                variants.add(mixed(s, layer, x, per));
            }
        }
        Map<String, Samples> t = interleaved(variants);
        Samples base = t.get("one adapter");
        for (Map.Entry<String, Samples> e : t.entrySet()) {
            boolean mixed = !e.getKey().equals("one adapter");
            Samples ratio = e.getValue().dividedBy(base);
            line(String.format(Locale.ROOT, "| %d², r = 8 | %,d | %s | %s | %s | %s |", d, n, e.getKey(),
                    stat(e.getValue()), mixed ? stat(ratio) : "1", e.getKey().startsWith("mixed")
                            ? String.format(Locale.ROOT, "≤ %.2f: %s", goal, ratio.median() <= goal ? "met" : "MISSED")
                            : ""));
        }
    }

    // ---------------------------------------------------------------- sweep

    private XYChart sweep(int d, int n) {
        line(String.format(Locale.ROOT, "## Sweep: K distinct adapters over n = %,d rows, W [%d, %d], r = 8", n, d, d));
        line("");
        line("Rows are assigned round-robin over the K adapters, then shuffled. Medians in ms (IQR); the ratio is the "
                + "cost model's choice over the one-adapter batch, median of per-round ratios.");
        line("");
        StringBuilder head = new StringBuilder("| K | one adapter | mixed (cost model) |");
        StringBuilder rule = new StringBuilder("|---:|---:|---:|");
        for (String s : MixedBatchStrategies.names()) {
            head.append(' ').append(s).append(" |");
            rule.append("---:|");
        }
        line(head.append(" ratio |").toString());
        line(rule.append("---:|").toString());
        int maxK = Math.min(n, SWEEP_K[SWEEP_K.length - 1]);
        LoraLinear layer = layer(d, 8, maxK, 17);
        INDArray x = Fixtures.gaussian(19, n, d);
        String[] one = new String[n];
        Arrays.fill(one, "t0");
        Map<String, List<double[]>> series = new LinkedHashMap<>();
        for (int k : SWEEP_K) {
            if (k > n) {
                continue;
            }
            String[] per = assignment(n, k, 23 + k);
            List<Variant> variants = new ArrayList<>();
            variants.add(new Variant("one adapter", () -> layer.forward(x, one)));
            variants.add(mixed(null, layer, x, per));
            for (String s : MixedBatchStrategies.names()) {
                if (!s.equals("STACKED") || (long) n * 8 * k <= MixedBatchStrategies.stackedMaxElements()) {
                    variants.add(mixed(s, layer, x, per));
                }
            }
            Map<String, Samples> t = interleaved(variants);
            StringBuilder row = new StringBuilder(String.format(Locale.ROOT, "| %d |", k));
            for (String name : List.of("one adapter", "mixed (cost model)")) {
                row.append(String.format(Locale.ROOT, " %.2f (%.2f–%.2f) |", t.get(name).median(), t.get(name).p25(),
                        t.get(name).p75()));
            }
            for (String s : MixedBatchStrategies.names()) {
                Samples v = t.get(s);
                row.append(v == null ? " – |" : String.format(Locale.ROOT, " %.2f (%.2f–%.2f) |", v.median(), v.p25(),
                        v.p75()));
            }
            Samples ratio = t.get("mixed (cost model)").dividedBy(t.get("one adapter"));
            row.append(String.format(Locale.ROOT, " %.3f (%.3f–%.3f) |", ratio.median(), ratio.p25(), ratio.p75()));
            line(row.toString());
            for (Map.Entry<String, Samples> e : t.entrySet()) {
                series.computeIfAbsent(e.getKey(), s -> new ArrayList<>())
                        .add(new double[] {k, e.getValue().median(), e.getValue().p25(), e.getValue().p75()});
            }
        }
        line("");
        return chart(series, d, n);
    }

    /** Time per batch against K (log), one series per variant, the one-adapter line dashed. */
    static XYChart chart(Map<String, List<double[]>> series, int d, int n) {
        XYChart chart = new XYChartBuilder().width(1000).height(520)
                .title(String.format(Locale.ROOT, "Mixed batch of %,d rows, W [%d, %d], r = 8: time vs distinct adapters",
                        n, d, d))
                .xAxisTitle("distinct adapters K in the batch").yAxisTitle("ms per batch (median, IQR bars)").build();
        chart.getStyler().setXAxisLogarithmic(true);
        chart.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        chart.getStyler().setLegendLayout(Styler.LegendLayout.Vertical);
        for (Map.Entry<String, List<double[]>> e : series.entrySet()) {
            List<double[]> pts = e.getValue();
            double[] xs = new double[pts.size()];
            double[] ys = new double[pts.size()];
            double[] err = new double[pts.size()];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = pts.get(i)[0];
                ys[i] = pts.get(i)[1];
                err[i] = (pts.get(i)[3] - pts.get(i)[2]) / 2;
            }
            XYSeries s = chart.addSeries(e.getKey(), xs, ys, err);
            s.setMarker(SeriesMarkers.CIRCLE);
            if (e.getKey().equals("one adapter")) {
                s.setLineStyle(SeriesLines.DASH_DASH);
            }
        }
        return chart;
    }

    /** Writes {@code base.svg} and {@code base.png} into {@code dir}, as {@code OverheadChart} does. */
    static void writeChart(XYChart chart, Path dir, String base) throws IOException {
        VectorGraphics2D g = new VectorGraphics2D();
        chart.paint(g, chart.getWidth(), chart.getHeight());
        Document doc = Processors.get("svg").getDocument(g.getCommands(),
                new PageSize(0, 0, chart.getWidth(), chart.getHeight()));
        try (OutputStream os = Files.newOutputStream(dir.resolve(base + ".svg"))) {
            doc.writeTo(os);
        }
        ImageIO.write(BitmapEncoder.getBufferedImage(chart), "png", dir.resolve(base + ".png").toFile());
    }

    // ---------------------------------------------------------------- training

    /**
     * {@code k} adapters of rank 8 on {@code W [d, d]}, {@code rowsEach} rows each: one mixed training step against
     * {@code k} single-adapter steps, each adapter on its own rows. Loss {@code ½‖y − t‖²}, Adam(1e-3).
     */
    private void train(int d, int rowsEach, int k) {
        int n = rowsEach * k;
        LoraLinear together = layer(d, 8, k, 31);
        LoraLinear apart = layer(d, 8, k, 31);
        together.train();
        apart.train();
        LoraTrainer tTogether = LoraTrainer.builder().updater(new Adam(1e-3)).build(together);
        LoraTrainer tApart = LoraTrainer.builder().updater(new Adam(1e-3)).build(apart);
        INDArray x = Fixtures.gaussian(37, n, d);
        INDArray target = Fixtures.gaussian(41, n, d);
        String[] per = assignment(n, k, 43);
        INDArray[] xs = new INDArray[k];
        INDArray[] ts = new INDArray[k];
        for (int a = 0; a < k; a++) {
            List<Integer> rows = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                if (per[i].equals("t" + a)) {
                    rows.add(i);
                }
            }
            int[] idx = rows.stream().mapToInt(Integer::intValue).toArray();
            xs[a] = Nd4j.pullRows(x, 1, idx);
            ts[a] = Nd4j.pullRows(target, 1, idx);
        }
        List<Variant> variants = List.of(
                new Variant("together", () -> {
                    INDArray y = together.forward(x, per);
                    together.backward(y.subi(target), false);             // g = y − t
                    tTogether.step();
                }),
                new Variant("one after another", () -> {
                    for (int a = 0; a < k; a++) {
                        apart.setActiveAdapter("t" + a);
                        INDArray y = apart.forward(xs[a]);
                        apart.backward(y.subi(ts[a]), false);
                        tApart.step();
                    }
                }));
        Map<String, Samples> t = interleaved(variants);
        Samples ratio = t.get("together").dividedBy(t.get("one after another"));
        line(String.format(Locale.ROOT, "## Training %d adapters (r = 8) on W [%d, %d], %d rows each (%d in all), Adam",
                k, d, d, rowsEach, n));
        line("");
        line("| variant | ms per step of all adapters: median (IQR, min–max) |");
        line("|---|---|");
        for (Map.Entry<String, Samples> e : t.entrySet()) {
            line("| " + e.getKey() + " | " + stat(e.getValue()) + " |");
        }
        line("");
        line("together / one after another: " + stat(ratio) + " (median of per-round ratios)");
        line("");
    }
}
