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
 * results), {@code report.md} (the tables) and {@code overhead.svg}/{@code overhead.png} (the chart). See
 * {@link #USAGE} for the options ({@code --help} prints it).
 */
public final class BenchmarkReport {

    private static final String ALL = "io\\.github\\.lora4j\\.benchmarks\\."
            + "(ForwardBenchmark|TrainingStepBenchmark|MergeBenchmark|MixedBatchBenchmark)\\..*";

    static final String USAGE = """
            Usage: java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.BenchmarkReport [options]

            Runs the JMH benchmarks and writes report.md, report.json, jmh-result.json and overhead.svg/.png.

            Options:
              --profile quick|full     quick (default): r = 8, n in {1, 64}, short iterations, about 5 min;
                                       full: r in {8, 64}, n in {1, 8, 64, 512}, about 23 min (2 cores)
              --shape INxOUT[,...]     layer shapes W [OUT, IN] to run instead of the square 1024x1024,4096x4096,
                                       e.g. --shape 4096x11008 (LLaMA-7B up_proj: in 4096, out 11008)
              --include REGEX          run only benchmarks whose name matches, e.g. 'ForwardBenchmark'
                                       or 'ForwardBenchmark\\.(merged|unmerged)' (default: all four classes)
              --out DIR                output directory (default lora-benchmarks/results/<date>-<profile>)
              --from-json FILE         re-render a stored report.json or jmh-result.json; runs nothing
                                       (output next to FILE unless --out is given)
              --help                   print this and exit
            """;

    private BenchmarkReport() {
    }

    /**
     * Entry point; see {@link #USAGE} for the arguments. Bad arguments print a message and exit with code 2.
     *
     * @param args the command line
     * @throws IOException     if a result cannot be read or written
     * @throws RunnerException if JMH fails
     */
    public static void main(String[] args) throws IOException, RunnerException {
        Map<String, String> opts;
        try {
            opts = parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("BenchmarkReport: " + e.getMessage());
            System.err.println("Run with --help for the options.");
            System.exit(2);
            return;
        }
        if (opts.containsKey("help")) {
            System.out.print(USAGE);
            return;
        }
        ReportData data;
        Path out;
        if (opts.containsKey("from-json")) {
            Path json = Path.of(opts.get("from-json"));
            data = ReportData.read(json);
            Path parent = json.toAbsolutePath().getParent();
            out = Path.of(opts.getOrDefault("out", parent.toString()));
        } else {
            Profile profile = Profile.named(opts.getOrDefault("profile", "quick"));
            if (opts.containsKey("shape")) {
                profile = profile.withShapes(shapes(opts.get("shape")));
            }
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

    /**
     * Runs JMH with the profile's settings, one run per shape (JMH's parameters form a product, so a shape list is
     * run shape by shape), then measures exact-merge memory; returns all of it.
     */
    static ReportData run(Profile profile, String include, Path out) throws IOException, RunnerException {
        Path jmhJson = out.resolve("jmh-result.json");
        ObjectMapper json = new ObjectMapper();
        ArrayNode jmh = json.createArrayNode();
        Instant start = Instant.now();
        for (int[] shape : profile.shapes()) {
            Path part = out.resolve("jmh-result-" + shape[0] + "x" + shape[1] + ".json");
            runShape(profile, include, shape, part);
            jmh.addAll((ArrayNode) json.readTree(part.toFile()));
            Files.delete(part);
        }
        json.writerWithDefaultPrettyPrinter().writeValue(jmhJson.toFile(), jmh);
        Map<String, String> env = environment(profile);
        env.put("wall clock of the JMH run", java.time.Duration.between(start, Instant.now()).toSeconds() + " s");
        return ReportData.of(env, exactMergeMemory(profile), jmh);
    }

    private static void runShape(Profile profile, String include, int[] shape, Path jmhJson) throws RunnerException {
        List<String> jvmArgs = new ArrayList<>(List.of("-Xms1g", "-Xmx2g"));
        if (Runtime.version().feature() >= 24) {
            jvmArgs.add("--enable-native-access=ALL-UNNAMED");
            jvmArgs.add("--sun-misc-unsafe-memory-access=allow");
        }
        ChainedOptionsBuilder b = new OptionsBuilder()
                .include(include)
                .warmupIterations(profile.warmupIterations())
                .warmupTime(TimeValue.milliseconds(profile.warmupMillis()))
                .measurementIterations(profile.measurementIterations())
                .measurementTime(TimeValue.milliseconds(profile.measurementMillis()))
                .jvmArgsAppend(jvmArgs.toArray(new String[0]))
                .shouldFailOnError(true)
                .resultFormat(ResultFormatType.JSON)
                .result(jmhJson.toString());
        if (profile.forks() > 0) {
            b.forks(profile.forks());
        }
        profile.params().forEach(b::param);
        b.param("in", String.valueOf(shape[0]));
        b.param("out", String.valueOf(shape[1]));
        new Runner(b.build()).run();
    }

    /** {@code LoraLinear.exactMergeBytes()} after an exact merge, per shape and rank of the profile. */
    static List<ExactMergeMemory> exactMergeMemory(Profile profile) {
        List<ExactMergeMemory> out = new ArrayList<>();
        for (int[] shape : profile.shapes()) {
            for (String rk : profile.ranks()) {
                int rank = Integer.parseInt(rk);
                if (rank > Math.min(shape[0], shape[1])) {
                    continue;
                }
                LoraLinear layer = Fixtures.layer(Fixtures.weight(shape[1], shape[0], 1), rank, 3);
                long inexact = inexactElements(layer);
                layer.merge(MergeMode.EXACT);
                out.add(new ExactMergeMemory(shape[0], shape[1], rank, Fixtures.RELATIVE_UPDATE,
                        layer.exactMergeBytes(), 4L * shape[0] * shape[1], inexact));
                layer.unmerge();
            }
        }
        return out;
    }

    /**
     * Parses {@code --shape}: comma-separated {@code INxOUT} pairs ({@code x} or {@code ×}), each side in
     * {@code 1..65536}.
     */
    static List<int[]> shapes(String text) {
        List<int[]> out = new ArrayList<>();
        for (String part : text.split(",", -1)) {
            String[] io = part.trim().split("[x×X]", -1);
            if (io.length != 2) {
                throw new IllegalArgumentException("--shape: expected INxOUT pairs such as 4096x11008, got '"
                        + part.trim() + "'");
            }
            int[] shape = new int[2];
            for (int k = 0; k < 2; k++) {
                try {
                    shape[k] = Integer.parseInt(io[k].trim());
                } catch (NumberFormatException e) {
                    shape[k] = -1;
                }
                if (shape[k] < 1 || shape[k] > 65_536) {
                    throw new IllegalArgumentException("--shape: expected " + (k == 0 ? "IN" : "OUT")
                            + " in 1..65536, got '" + io[k].trim() + "' in '" + part.trim() + "'");
                }
            }
            out.add(shape);
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

    /**
     * The options by name (without {@code --}); {@code help} alone when {@code --help} or {@code -h} is given.
     * Values are checked here, so that a bad one fails before anything runs.
     */
    static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--help") || a.equals("-h")) {
                return Map.of("help", "");
            }
            if (!List.of("--profile", "--out", "--from-json", "--include", "--shape").contains(a)) {
                throw new IllegalArgumentException("unknown argument '" + a + "'; expected --profile quick|full, "
                        + "--shape INxOUT[,...], --include REGEX, --out DIR, --from-json FILE or --help");
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(a + ": expected a value after it, got none");
            }
            opts.put(a.substring(2), args[++i]);
        }
        if (opts.containsKey("from-json") && (opts.containsKey("profile") || opts.containsKey("include")
                || opts.containsKey("shape"))) {
            throw new IllegalArgumentException("--from-json re-renders a stored result; it takes no --profile, "
                    + "--shape or --include, got " + opts.keySet());
        }
        if (opts.containsKey("profile")) {
            Profile.named(opts.get("profile"));
        }
        if (opts.containsKey("shape")) {
            shapes(opts.get("shape"));
        }
        if (opts.containsKey("include")) {
            try {
                java.util.regex.Pattern.compile(opts.get("include"));
            } catch (java.util.regex.PatternSyntaxException e) {
                throw new IllegalArgumentException("--include: expected a regular expression, got '"
                        + opts.get("include") + "' (" + e.getDescription() + ")");
            }
        }
        return opts;
    }
}
