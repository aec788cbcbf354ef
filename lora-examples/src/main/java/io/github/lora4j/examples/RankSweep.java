package io.github.lora4j.examples;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.knowm.xchart.ChartEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.schedule.ExponentialSchedule;
import org.nd4j.linalg.schedule.ScheduleType;

/**
 * When does LoRA work? Trains LoRA adapters of rank {@code 1 .. maxRank} to reproduce a known update {@code ΔW} of a
 * frozen {@code d × d} layer from pairs {@code (x, (W + ΔW) x)}, and compares each adapter's final relative error
 * {@code ‖s·B·A − ΔW‖_F / ‖ΔW‖_F} with the best any rank-{@code r} matrix can do (Eckart–Young):
 * {@code sqrt(σ_{r+1}² + σ_{r+2}² + ...) / ‖ΔW‖_F} from {@code ΔW}'s singular values.
 *
 * <p>Two targets: {@code ΔW} of rank {@code k} plus small full-rank noise (LoRA of rank {@code ≥ k} reaches the noise
 * floor), and a full-rank {@code ΔW} with a flat spectrum, where every small rank stays far from the target: the case
 * LoRA is not made for.
 *
 * <p>The inputs are whitened ({@code XᵀX = N·I}), so the training loss {@code ½‖Y − T‖_F² / N} equals
 * {@code ½‖s·B·A − ΔW‖_F²}: the bound is exactly the best reachable training loss, and Adam with an exponentially
 * decaying learning rate converges to it. Everything is seeded: the numbers are reproducible.
 *
 * <p>Speed: the 16 trainings (2 targets × 8 ranks, 1,500 Adam steps each on a 64 × 64 layer) are independent and run
 * on all cores at once, each op single-threaded ({@link #singleThreadedOps()}): at this size threads inside an op only
 * wait for each other, and OpenBLAS's spinning workers would fight ND4J's for the cores. The first layer's input is
 * data, so {@code backward(g, false)} skips {@code dL/dx}. A progress bar on stderr counts the steps.
 *
 * <p>Run: {@code mvn -B -q -Pexample -Dexample=io.github.lora4j.examples.RankSweep -DskipTests -pl lora-examples -am
 * package}; an argument overrides the chart's path (default {@code lora-examples/target/examples/rank-sweep.png}).
 */
public final class RankSweep {

    private RankSweep() {
    }

    /**
     * What to sweep.
     *
     * @param size         {@code d}: {@code W} and {@code ΔW} are {@code d × d}
     * @param trueRank     {@code k}, the rank of the low-rank target
     * @param noise        Frobenius norm of the full-rank noise added to the low-rank target, relative to its norm
     * @param maxRank      adapters of rank {@code 1 .. maxRank} are trained (the brief: {@code 2k})
     * @param steps        Adam steps per adapter (full batch)
     * @param learningRate Adam's initial learning rate ({@code beta2 = 0.95}), decayed exponentially to 1 % of it over
     *                     {@code steps}
     * @param seed         seed of every random draw
     */
    public record Settings(int size, int trueRank, double noise, int maxRank, int steps, double learningRate, long seed) {

        /** Validates the settings. */
        public Settings {
            if (size < 2 || trueRank < 1 || trueRank > size || maxRank < 1 || maxRank > size || steps < 1) {
                throw new IllegalArgumentException("expected 1 <= trueRank <= size, 1 <= maxRank <= size, steps >= 1;"
                        + " got size " + size + ", trueRank " + trueRank + ", maxRank " + maxRank + ", steps " + steps);
            }
            if (!(noise >= 0) || !(learningRate > 0)) {
                throw new IllegalArgumentException("expected noise >= 0 and learningRate > 0, got " + noise + " and "
                        + learningRate);
            }
        }

        /** The example's default: 64 × 64, {@code k = 4}, 2 % noise, ranks 1..8. */
        public static Settings defaults() {
            return new Settings(64, 4, 0.02, 8, 1500, 0.01, 2024);
        }
    }

    /**
     * One trained adapter.
     *
     * @param rank  adapter rank {@code r}
     * @param error {@code ‖s·B·A − ΔW‖_F / ‖ΔW‖_F} after training
     * @param bound Eckart–Young: the smallest relative error of any rank-{@code r} matrix
     */
    public record Row(int rank, double error, double bound) {

        /** {@code error / bound}: 1 is optimal; infinite when the bound is 0 but the error is not. */
        public double ratio() {
            return bound == 0 ? (error == 0 ? 1 : Double.POSITIVE_INFINITY) : error / bound;
        }
    }

    /**
     * The sweep over one target.
     *
     * @param name           what the target is
     * @param singularValues {@code ΔW}'s singular values, descending
     * @param rows           one per rank, ascending
     */
    public record Sweep(String name, double[] singularValues, List<Row> rows) {
    }

    /**
     * Both sweeps.
     *
     * @param settings what was run
     * @param lowRank  target of rank {@code k} plus noise
     * @param fullRank target with a flat spectrum
     */
    public record Result(Settings settings, Sweep lowRank, Sweep fullRank) {
    }

    /** Entry point: runs the default sweep, prints the table and writes the chart. */
    public static void main(String[] args) throws IOException {
        Path chart = args.length > 0 ? Path.of(args[0]) : ExampleOutput.file("rank-sweep.png");
        Settings settings = Settings.defaults();
        System.out.printf(Locale.ROOT, "Rank sweep: W, ΔW %d×%d, true rank k = %d (+%.0f %% noise), LoRA rank 1..%d,"
                        + " Adam %d steps%n%n", settings.size(), settings.size(), settings.trueRank(),
                100 * settings.noise(), settings.maxRank(), settings.steps());
        singleThreadedOps();
        long t0 = System.nanoTime();
        Result result;
        try (ProgressBar bar = new ProgressBarBuilder().setTaskName("Adam steps").setStyle(ProgressBarStyle.ASCII)
                .setInitialMax(2L * settings.maxRank() * settings.steps()).setUpdateIntervalMillis(250)
                .setMaxRenderedLength(100).build()) {
            result = run(settings, bar);
        }
        System.out.printf(Locale.ROOT, "%d trainings in %.1f s%n%n", 2 * settings.maxRank(), (System.nanoTime() - t0) / 1e9);
        System.out.print(table(result));
        writeChart(result, chart);
        System.out.println();
        System.out.println("Chart: " + chart.toAbsolutePath());
    }

    /**
     * Runs every ND4J op and BLAS call on one thread (the sweep runs its trainings in parallel instead). A process-wide
     * setting of ND4J and OpenBLAS: {@link #main} calls it, {@link #run} does not.
     */
    public static void singleThreadedOps() {
        Nd4j.getEnvironment().setMaxMasterThreads(1);
        Nd4j.getEnvironment().setMaxThreads(1);
        Nd4j.factory().blas().setMaxThreads(1);
    }

    /** Builds both targets and trains one adapter per rank on each; no progress bar. */
    public static Result run(Settings s) {
        return run(s, null);
    }

    /**
     * Builds both targets and trains one adapter per rank on each, the trainings in parallel on all cores.
     *
     * @param progress stepped once per Adam step of any training, or null
     */
    public static Result run(Settings s, ProgressBar progress) {
        int d = s.size();
        SplittableRandom rng = new SplittableRandom(s.seed());
        INDArray w = gaussian(rng, d, d, 1.0 / Math.sqrt(d));

        // Low-rank target: U diag(σ) Vᵀ with σ = k, k-1, ..., 1 (distinct gaps), plus noise.
        double[][] u = orthonormalColumns(rng, d, s.trueRank(), 1.0);
        double[][] v = orthonormalColumns(rng, d, s.trueRank(), 1.0);
        double[][] lowRank = new double[d][d];
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < d; j++) {
                for (int q = 0; q < s.trueRank(); q++) {
                    lowRank[i][j] += u[i][q] * (s.trueRank() - q) * v[j][q];
                }
            }
        }
        INDArray clean = Nd4j.createFromArray(lowRank);
        INDArray noise = gaussian(rng, d, d, 1.0);
        noise.muli(s.noise() * clean.norm2Number().doubleValue() / noise.norm2Number().doubleValue());
        INDArray lowTarget = clean.add(noise);

        // Full-rank target: i.i.d. Gaussian, scaled to the same Frobenius norm.
        INDArray fullTarget = gaussian(rng, d, d, 1.0);
        fullTarget.muli(lowTarget.norm2Number().doubleValue() / fullTarget.norm2Number().doubleValue());

        // Whitened inputs: columns orthonormal, scaled so XᵀX = N·I.
        int samples = 2 * d;
        INDArray x = Nd4j.createFromArray(orthonormalColumns(rng, samples, d, Math.sqrt(samples)));

        ExecutorService pool = Executors.newFixedThreadPool(Runtime.getRuntime().availableProcessors());
        try {
            List<Future<Double>> low = trainAll(pool, s, w, lowTarget, x, progress);
            List<Future<Double>> full = trainAll(pool, s, w, fullTarget, x, progress);
            return new Result(s, sweep("rank-" + s.trueRank() + " ΔW + noise", lowTarget, low),
                    sweep("full-rank ΔW", fullTarget, full));
        } finally {
            pool.shutdownNow();
        }
    }

    /** Submits one training per rank {@code 1 .. maxRank}; each result is its relative error. */
    private static List<Future<Double>> trainAll(ExecutorService pool, Settings s, INDArray w, INDArray delta, INDArray x,
                                                 ProgressBar progress) {
        List<Future<Double>> errors = new ArrayList<>();
        for (int r = 1; r <= s.maxRank(); r++) {
            int rank = r;
            errors.add(pool.submit(() -> train(s, w, delta, x, rank, progress)));
        }
        return errors;
    }

    private static Sweep sweep(String name, INDArray delta, List<Future<Double>> errors) {
        double[] sigma = singularValues(delta);
        double total = 0;
        for (double v : sigma) {
            total += v * v;
        }
        List<Row> rows = new ArrayList<>();
        for (int r = 1; r <= errors.size(); r++) {
            double tail = 0;
            for (int i = r; i < sigma.length; i++) {
                tail += sigma[i] * sigma[i];
            }
            rows.add(new Row(r, result(errors.get(r - 1)), Math.sqrt(tail / total)));
        }
        return new Sweep(name, sigma, List.copyOf(rows));
    }

    private static double result(Future<Double> f) {
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for a training", e);
        } catch (ExecutionException e) {
            throw new IllegalStateException("a training failed: " + e.getCause(), e.getCause());
        }
    }

    /** Trains a rank-{@code r} adapter in float on {@code (x, x (W + ΔW)ᵀ)}; returns its relative error. */
    private static double train(Settings s, INDArray w, INDArray delta, INDArray x, int r, ProgressBar progress) {
        INDArray wf = w.castTo(DataType.FLOAT);
        INDArray xf = x.castTo(DataType.FLOAT);
        INDArray target = x.mmul(w.add(delta).transpose()).castTo(DataType.FLOAT);
        // alpha = r: scaling 1, so B·A itself approximates ΔW. Seeds differ per rank only through the rank.
        LoraLinear layer = LoraLinear.wrap(wf, null,
                LoraConfig.builder().rank(r).alpha(r).seed(s.seed() + r).build());
        // The learning rate decays to 1 % of its start over the run, so the last steps settle instead of hovering.
        // beta2 = 0.95 (as in many LLM fine-tuning recipes) instead of 0.999: once the large singular directions are
        // fitted, the gradients left are the small noise directions; with 0.999 the second moment remembers the
        // early large gradients for thousands of steps and ranks above k stall about 10 % above the bound.
        double decay = Math.pow(0.01, 1.0 / s.steps());
        Adam adam = Adam.builder()
                .learningRateSchedule(new ExponentialSchedule(ScheduleType.ITERATION, s.learningRate(), decay))
                .beta2(0.95).build();
        LoraTrainer trainer = LoraTrainer.builder().updater(adam).build(layer);
        layer.train();
        double n = x.rows();
        for (int step = 0; step < s.steps(); step++) {
            INDArray y = layer.forward(xf);
            // d/dy of the mean squared error ½‖y − t‖² / n; x is data, so no dL/dx
            layer.backward(y.subi(target).divi(n), false);
            trainer.step();
            if (progress != null && step % 100 == 99) {
                progress.stepBy(100);
            }
        }
        if (progress != null) {
            progress.stepBy(s.steps() % 100);
        }
        layer.eval();
        INDArray learned = layer.mergedWeight().castTo(DataType.DOUBLE).subi(w);
        return learned.subi(delta).norm2Number().doubleValue() / delta.norm2Number().doubleValue();
    }

    /**
     * Singular values of {@code m}, descending, through LAPACK's gesvd. ND4J's wrapper needs an f-order input (a
     * c-order one gives wrong values silently) and overwrites it, hence the f-order copy; no singular vectors.
     */
    public static double[] singularValues(INDArray m) {
        INDArray work = m.castTo(DataType.DOUBLE).dup('f');
        INDArray s = Nd4j.create(DataType.DOUBLE, Math.min(m.rows(), m.columns()));
        Nd4j.getBlasWrapper().lapack().gesvd(work, s, null, null);
        return s.toDoubleVector();
    }

    /** The table printed by {@link #main}: per rank, error, bound and ratio for both targets. */
    public static String table(Result result) {
        StringBuilder sb = new StringBuilder();
        for (Sweep sweep : List.of(result.lowRank(), result.fullRank())) {
            sb.append(sweep.name()).append(String.format(Locale.ROOT, " (top singular values: %s)%n",
                    top(sweep.singularValues(), result.settings().maxRank() + 1)));
            sb.append(String.format(Locale.ROOT, "%6s %14s %18s %8s%n", "rank", "LoRA error", "Eckart-Young bound",
                    "ratio"));
            for (Row row : sweep.rows()) {
                sb.append(String.format(Locale.ROOT, "%6d %14.5f %18.5f %8.4f%n", row.rank(), row.error(), row.bound(),
                        row.ratio()));
            }
            sb.append(System.lineSeparator());
        }
        return sb.toString();
    }

    /**
     * Writes the chart of relative error vs rank (both targets, LoRA and bound) as a PNG; creates missing directories
     * and replaces {@code file} only once the picture is complete.
     */
    public static void writeChart(Result result, Path file) throws IOException {
        System.setProperty("java.awt.headless", "true");
        XYChart chart = new XYChartBuilder().width(900).height(560)
                .title("LoRA rank sweep: trained error vs the Eckart–Young bound (d = " + result.settings().size()
                        + ", true rank k = " + result.settings().trueRank() + ")")
                .xAxisTitle("adapter rank r").yAxisTitle("relative error ‖sBA − ΔW‖_F / ‖ΔW‖_F").build();
        chart.getStyler().setYAxisLogarithmic(true);
        chart.getStyler().setLegendPosition(Styler.LegendPosition.OutsideS);
        chart.getStyler().setLegendLayout(Styler.LegendLayout.Horizontal);
        chart.getStyler().setXAxisDecimalPattern("0");
        chart.getStyler().setYAxisDecimalPattern("0.###");
        chart.getStyler().setYAxisMin(0.01);
        chart.getStyler().setYAxisMax(1.0);
        java.awt.Color blue = new java.awt.Color(0x1f77b4);
        java.awt.Color red = new java.awt.Color(0xd62728);
        // Bounds first, as wide pale bands: the trained curves lie on them and must stay visible on top.
        addBound(chart, result.lowRank(), blue);
        addBound(chart, result.fullRank(), red);
        addTrained(chart, result.lowRank(), blue);
        addTrained(chart, result.fullRank(), red);
        Path parent = file.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        // Written beside the target and moved into place, so a failed write never leaves half a picture.
        Path tmp = parent.resolve(file.getFileName() + ".tmp");
        try {
            Files.write(tmp, ChartEncoder.getBytes(chart, "png"));
            Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static void addTrained(XYChart chart, Sweep sweep, java.awt.Color color) {
        XYSeries trained = chart.addSeries("LoRA, " + sweep.name(), ranks(sweep),
                sweep.rows().stream().mapToDouble(Row::error).toArray());
        trained.setMarker(SeriesMarkers.CIRCLE);
        trained.setLineColor(color);
        trained.setMarkerColor(color);
        trained.setLineWidth(1.5f);
    }

    private static void addBound(XYChart chart, Sweep sweep, java.awt.Color color) {
        XYSeries bound = chart.addSeries("Eckart–Young bound, " + sweep.name(), ranks(sweep),
                sweep.rows().stream().mapToDouble(Row::bound).toArray());
        bound.setMarker(SeriesMarkers.NONE);
        bound.setLineStyle(new java.awt.BasicStroke(10f, java.awt.BasicStroke.CAP_ROUND, java.awt.BasicStroke.JOIN_ROUND));
        bound.setLineColor(new java.awt.Color(color.getRed(), color.getGreen(), color.getBlue(), 80));
    }

    private static double[] ranks(Sweep sweep) {
        return sweep.rows().stream().mapToDouble(Row::rank).toArray();
    }

    private static String top(double[] values, int count) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < Math.min(count, values.length); i++) {
            sb.append(i == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.3f", values[i]));
        }
        return sb.append(values.length > count ? ", ..." : "").toString();
    }

    private static INDArray gaussian(SplittableRandom rng, int rows, int cols, double scale) {
        double[][] a = new double[rows][cols];
        for (double[] row : a) {
            for (int j = 0; j < cols; j++) {
                row[j] = rng.nextGaussian() * scale;
            }
        }
        return Nd4j.createFromArray(a);
    }

    /** {@code rows × cols} with orthonormal columns times {@code scale}: modified Gram–Schmidt on Gaussian columns. */
    private static double[][] orthonormalColumns(SplittableRandom rng, int rows, int cols, double scale) {
        double[][] q = new double[cols][rows];
        for (int c = 0; c < cols; c++) {
            for (int i = 0; i < rows; i++) {
                q[c][i] = rng.nextGaussian();
            }
            for (int pass = 0; pass < 2; pass++) { // twice is enough (Kahan–Parlett)
                for (int p = 0; p < c; p++) {
                    double dot = 0;
                    for (int i = 0; i < rows; i++) {
                        dot += q[p][i] * q[c][i];
                    }
                    for (int i = 0; i < rows; i++) {
                        q[c][i] -= dot * q[p][i];
                    }
                }
            }
            double norm = 0;
            for (int i = 0; i < rows; i++) {
                norm += q[c][i] * q[c][i];
            }
            norm = Math.sqrt(norm);
            for (int i = 0; i < rows; i++) {
                q[c][i] /= norm;
            }
        }
        double[][] out = new double[rows][cols];
        for (int i = 0; i < rows; i++) {
            for (int c = 0; c < cols; c++) {
                out[i][c] = q[c][i] * scale;
            }
        }
        return out;
    }
}
