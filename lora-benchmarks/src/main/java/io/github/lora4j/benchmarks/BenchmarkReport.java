package io.github.lora4j.benchmarks;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.benchmarks.report.ExactMergeMemory;
import io.github.lora4j.benchmarks.report.MarkdownReport;
import io.github.lora4j.benchmarks.report.OverheadChart;
import io.github.lora4j.benchmarks.report.Profile;
import io.github.lora4j.benchmarks.report.ReportData;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.LocalDate;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.openjdk.jmh.results.format.ResultFormatType;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * Runs the benchmarks and writes the report: {@code report.json} (environment, exact-merge memory and JMH's own
 * results), {@code report.md} (the tables) and {@code overhead.svg}/{@code overhead.png} (the chart).
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.BenchmarkReport --profile quick|full [--out dir]
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.BenchmarkReport --from-json report.json [--out dir]
 * </pre>
 * Options: {@code --include REGEX} runs only matching benchmarks (e.g. for a smoke test). The default output
 * directory is {@code lora-benchmarks/results/<date>-<profile>} (or {@code results/...} outside the project root);
 * with {@code --from-json} it is the JSON file's directory.
 */
public final class BenchmarkReport {

    private static final String ALL = "io\\.github\\.lora4j\\.benchmarks\\."
            + "(ForwardBenchmark|TrainingStepBenchmark|MergeBenchmark|MixedBatchBenchmark)\\..*";

    private BenchmarkReport() {
    }

    /** Entry point; see the class comment for the arguments. */
    public static void main(String[] args) throws IOException, RunnerException {
        Map<String, String> opts = parse(args);
        ReportData data;
        Path out;
        if (opts.containsKey("from-json")) {
            Path json = Path.of(opts.get("from-json"));
            data = ReportData.read(json);
            Path parent = json.toAbsolutePath().getParent();
            out = Path.of(opts.getOrDefault("out", parent.toString()));
        } else {
            Profile profile = Profile.named(opts.getOrDefault("profile", "quick"));
            out = Path.of(opts.getOrDefault("out", defaultOut(profile)));
            Files.createDirectories(out);
            data = run(profile, opts.getOrDefault("include", ALL), out);
            data.write(out.resolve("report.json"));
        }
        Files.createDirectories(out);
        List<Path> charts = OverheadChart.write(data, out, "overhead");
        String md = MarkdownReport.render(data, charts.isEmpty() ? null : charts.get(0).getFileName().toString());
        Files.writeString(out.resolve("report.md"), md, StandardCharsets.UTF_8);
        System.out.println(md);
        System.out.println("Wrote " + out.resolve("report.md") + (charts.isEmpty() ? "" : " and " + charts));
    }

    /** Runs JMH with the profile's settings, then measures exact-merge memory; returns all of it. */
    static ReportData run(Profile profile, String include, Path out) throws IOException, RunnerException {
        Path jmhJson = out.resolve("jmh-result.json");
        List<String> jvmArgs = new ArrayList<>(List.of("-Xms1g", "-Xmx2g"));
        if (Runtime.version().feature() >= 24) {
            jvmArgs.add("--enable-native-access=ALL-UNNAMED");
            jvmArgs.add("--sun-misc-unsafe-memory-access=allow");
        }
        ChainedOptionsBuilder b = new OptionsBuilder()
                .include(include)
                .forks(profile.forks())
                .warmupIterations(profile.warmupIterations())
                .warmupTime(TimeValue.milliseconds(profile.warmupMillis()))
                .measurementIterations(profile.measurementIterations())
                .measurementTime(TimeValue.milliseconds(profile.measurementMillis()))
                .jvmArgsAppend(jvmArgs.toArray(new String[0]))
                .shouldFailOnError(true)
                .resultFormat(ResultFormatType.JSON)
                .result(jmhJson.toString());
        profile.params().forEach(b::param);
        Instant start = Instant.now();
        new Runner(b.build()).run();
        Map<String, String> env = environment(profile);
        env.put("wall clock of the JMH run", java.time.Duration.between(start, Instant.now()).toSeconds() + " s");
        ArrayNode jmh = (ArrayNode) new ObjectMapper().readTree(jmhJson.toFile());
        return ReportData.of(env, exactMergeMemory(profile), jmh);
    }

    /** {@code LoraLinear.exactMergeBytes()} after an exact merge, per size and rank of the profile. */
    static List<ExactMergeMemory> exactMergeMemory(Profile profile) {
        String[] sizes = profile.params().getOrDefault("size", new String[] {"1024", "4096"});
        String[] ranks = profile.params().getOrDefault("rank", new String[] {"8", "64"});
        List<ExactMergeMemory> out = new ArrayList<>();
        for (String sz : sizes) {
            int size = Integer.parseInt(sz);
            for (String rk : ranks) {
                int rank = Integer.parseInt(rk);
                LoraLinear layer = Fixtures.layer(Fixtures.weight(size, 1), rank, 3);
                long inexact = inexactElements(layer);
                layer.merge(MergeMode.EXACT);
                out.add(new ExactMergeMemory(size, rank, Fixtures.RELATIVE_UPDATE, layer.exactMergeBytes(),
                        4L * size * size, inexact));
                layer.unmerge();
            }
        }
        return out;
    }

    /** Elements of the unmerged layer's W with {@code fl(fl(w + d) − d) != w} for {@code d} of {@code s·B·A}. */
    static long inexactElements(LoraLinear layer) {
        LoraAdapter adapter = layer.adapter(LoraLinear.DEFAULT_ADAPTER);
        INDArray delta = Nd4j.createUninitialized(DataType.FLOAT, layer.outFeatures(), layer.inFeatures());
        Nd4j.gemm(adapter.b(), adapter.a(), delta, false, false, adapter.scaling(), 0.0);
        float[] w = layer.weight().data().asFloat();
        float[] d = delta.data().asFloat();
        long count = 0;
        for (int i = 0; i < w.length; i++) {
            float m = w[i] + d[i];
            if (Float.floatToRawIntBits(m - d[i]) != Float.floatToRawIntBits(w[i])) {
                count++;
            }
        }
        return count;
    }

    /** Date, JDK, OS, CPU count, ND4J version, backend, BLAS vendor and thread settings, and the profile. */
    static Map<String, String> environment(Profile profile) {
        Map<String, String> env = new LinkedHashMap<>();
        env.put("date (UTC)", Instant.now().toString());
        env.put("profile", profile.describe());
        env.put("JDK", System.getProperty("java.vm.vendor") + " " + System.getProperty("java.vm.name") + " "
                + System.getProperty("java.runtime.version"));
        env.put("OS", System.getProperty("os.name") + " " + System.getProperty("os.version") + " "
                + System.getProperty("os.arch"));
        env.put("available processors", String.valueOf(Runtime.getRuntime().availableProcessors()));
        env.put("ND4J version", nd4jVersion());
        env.put("ND4J backend", Nd4j.getBackend().getClass().getName());
        env.put("ND4J maxMasterThreads", String.valueOf(Nd4j.getEnvironment().maxMasterThreads()));
        env.put("ND4J maxThreads", String.valueOf(Nd4j.getEnvironment().maxThreads()));
        env.put("OMP_NUM_THREADS (env)", String.valueOf(System.getenv("OMP_NUM_THREADS")));
        Properties info = Nd4j.getExecutioner().getEnvironmentInformation();
        new TreeMap<>(info).forEach((k, v) -> env.put("nd4j " + k, String.valueOf(v)));
        return env;
    }

    private static String nd4jVersion() {
        try (InputStream in = Nd4j.class.getResourceAsStream("/META-INF/maven/org.nd4j/nd4j-api/pom.properties")) {
            if (in == null) {
                return "unknown";
            }
            Properties p = new Properties();
            p.load(in);
            return p.getProperty("version", "unknown");
        } catch (IOException e) {
            return "unknown (" + e.getMessage() + ")";
        }
    }

    private static String defaultOut(Profile profile) {
        String dated = LocalDate.now(ZoneOffset.UTC) + "-" + profile.name();
        return Files.isDirectory(Path.of("lora-benchmarks")) ? "lora-benchmarks/results/" + dated : "results/" + dated;
    }

    static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--") || !List.of("--profile", "--out", "--from-json", "--include").contains(a)) {
                throw new IllegalArgumentException("unknown argument '" + a + "'; expected --profile quick|full, "
                        + "--out DIR, --from-json FILE or --include REGEX");
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(a + ": expected a value after it, got none");
            }
            opts.put(a.substring(2), args[++i]);
        }
        if (opts.containsKey("from-json") && (opts.containsKey("profile") || opts.containsKey("include"))) {
            throw new IllegalArgumentException("--from-json re-renders a stored result; it takes no --profile or "
                    + "--include, got " + opts.keySet());
        }
        return opts;
    }
}
