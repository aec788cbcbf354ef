package io.github.lora4j.benchmarks.sidebyside;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.nd4j.linalg.factory.Nd4j;

/**
 * lora4j against PyTorch on the same CPU, side by side: runs its own targets and {@code torch/side_by_side.py} in
 * alternating rounds within one run, then writes {@code report.md} (ratios lora4j/PyTorch with the targets)
 * and {@code results.jsonl} (every median) into the output folder.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.sidebyside.SideBySide \
 *     [--rounds 2] [--budget 1.0] [--grid full|small] [--python /usr/bin/python3] \
 *     [--script lora-benchmarks/torch/side_by_side.py] [--out lora-benchmarks/results/DATE-side-by-side]
 * </pre>
 * The PyTorch rounds run with {@code OPENBLAS_CORETYPE} and {@code OPENBLAS_L2_SIZE} removed from their
 * environment, so that PyTorch's OpenBLAS picks its own kernel; the report records which. Needs PyTorch only when
 * run: nothing in the build or the tests calls it.
 */
public final class SideBySide {

    static final List<int[]> FULL_GRID = grid(new int[] {1024, 4096}, new int[] {8, 64}, new int[] {1, 8, 64, 512});
    static final List<int[]> SMALL_GRID = List.of(new int[] {256, 8, 8}, new int[] {64, 8, 64});

    /** What {@code --help} prints; a bad option prints it too, after one line naming the problem. */
    static final String USAGE = String.join("\n",
            "usage: SideBySide [--rounds 2] [--budget 1.0] [--grid full|small] [--python /usr/bin/python3]",
            "                  [--script lora-benchmarks/torch/side_by_side.py] [--out lora-benchmarks/results/DATE-side-by-side]",
            "Runs lora4j and PyTorch (the script, in a child process) in alternating rounds on the same shapes and",
            "writes report.md and results.jsonl into --out. full: d in {1024, 4096}, r in {8, 64}, n in {1, 8, 64, 512}",
            "plus 64 x 64; small: 256 x 256 r8 n8 and 64 x 64. About 10 minutes for full at the defaults.");

    private SideBySide() {
    }

    private static List<int[]> grid(int[] ds, int[] rs, int[] ns) {
        List<int[]> g = new ArrayList<>();
        for (int d : ds) {
            for (int r : rs) {
                for (int n : ns) {
                    g.add(new int[] {d, r, n});
                }
            }
        }
        g.add(new int[] {64, 8, 64});
        return List.copyOf(g);
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        Map<String, String> opt = new LinkedHashMap<>();
        opt.put("rounds", "2");
        opt.put("budget", "1.0");
        opt.put("grid", "full");
        opt.put("python", "/usr/bin/python3");
        opt.put("script", "lora-benchmarks/torch/side_by_side.py");
        opt.put("out", "lora-benchmarks/results/" + LocalDate.now() + "-side-by-side");
        for (int i = 0; i < args.length; i += 2) {
            if (args[i].equals("--help") || args[i].equals("-h")) {
                System.out.println(USAGE);
                return;
            }
            String key = args[i].replaceFirst("^--", "");
            if (!opt.containsKey(key) || i + 1 >= args.length) {
                System.err.println((opt.containsKey(key) ? "option " + args[i] + " needs a value" : "unknown option "
                        + args[i] + "; known: --" + String.join(", --", opt.keySet())) + "\n" + USAGE);
                System.exit(2);
            }
            opt.put(key, args[i + 1]);
        }
        int rounds = Integer.parseInt(opt.get("rounds"));
        double budget = Double.parseDouble(opt.get("budget"));
        List<int[]> shapes = opt.get("grid").equals("small") ? SMALL_GRID : FULL_GRID;
        Path out = Path.of(opt.get("out"));
        Files.createDirectories(out);

        List<Result> results = new ArrayList<>();
        List<String> env = new ArrayList<>();
        env.add("lora4j route: " + route());
        env.add("nd4j OpenBLAS core: " + nd4jCore(opt.get("python")));
        env.add("java: " + System.getProperty("java.vm.name") + " " + System.getProperty("java.version")
                + ", cores: " + Runtime.getRuntime().availableProcessors() + ", backend: "
                + Nd4j.getBackend().getClass().getSimpleName());
        env.add("environment: OPENBLAS_CORETYPE=" + System.getenv("OPENBLAS_CORETYPE") + ", OPENBLAS_L2_SIZE="
                + System.getenv("OPENBLAS_L2_SIZE") + ", OMP_WAIT_POLICY=" + System.getenv("OMP_WAIT_POLICY"));
        for (int round = 1; round <= rounds; round++) {
            env.add("load average before round " + round + ": " + loadAverage());
            for (int[] s : shapes) {
                Map<String, Timing.Stats> m = JavaSide.measure(s[0], s[1], s[2], budget);
                for (Map.Entry<String, Timing.Stats> e : m.entrySet()) {
                    Result r = new Result("lora4j", round, s[0], s[1], s[2], e.getKey(), e.getValue());
                    results.add(r);
                    System.out.println(r.json());
                }
            }
            results.addAll(torchRound(opt, round, budget, env));
        }
        env.add("load average after the last round: " + loadAverage());
        Files.write(out.resolve("results.jsonl"), results.stream().map(Result::json).toList(), StandardCharsets.UTF_8);
        String report = Report.markdown(results, env, rounds, budget, String.join(" ", args));
        Files.writeString(out.resolve("report.md"), report, StandardCharsets.UTF_8);
        System.out.println(report);
    }

    /** One PyTorch round: the script's JSON lines, parsed; its first line describes the PyTorch build. */
    private static List<Result> torchRound(Map<String, String> opt, int round, double budget, List<String> env)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(opt.get("python"), opt.get("script"), "--budget", String.valueOf(budget),
                "--grid", opt.get("grid"), "--round", String.valueOf(round));
        pb.environment().remove("OPENBLAS_CORETYPE");
        pb.environment().remove("OPENBLAS_L2_SIZE");
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process p = pb.start();
        ObjectMapper json = new ObjectMapper();
        List<Result> results = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                System.out.println(line);
                JsonNode node = json.readTree(line);
                if (node.has("info")) {
                    if (round == 1) {
                        env.add("torch: " + node.get("torch").asText() + ", threads " + node.get("threads").asInt()
                                + "; " + node.get("config").asText());
                    }
                    continue;
                }
                results.add(new Result("torch", round, node.get("d").asInt(), node.get("r").asInt(), node.get("n").asInt(),
                        node.get("target").asText(), new Timing.Stats(node.get("median_ms").asDouble(),
                        node.get("p25_ms").asDouble(), node.get("p75_ms").asDouble(), node.get("calls").asInt())));
            }
        }
        int rc = p.waitFor();
        if (rc != 0) {
            throw new IOException("the PyTorch script exited with " + rc + "; is PyTorch installed for " + opt.get("python") + "?");
        }
        return results;
    }

    /**
     * The 1, 5 and 15 minute load averages of the machine ({@code /proc/loadavg}): other processes on the same cores
     * make both sides slower and noisier, so the report says how busy the machine was.
     */
    private static String loadAverage() {
        try {
            String[] f = Files.readString(Path.of("/proc/loadavg")).trim().split("\\s+");
            return f[0] + " " + f[1] + " " + f[2];
        } catch (IOException | RuntimeException e) {
            return "unknown (" + e + ")";
        }
    }

    /** lora4j's kernel route (package-private in lora-core; read for the report only). */
    private static String route() {
        try {
            Class<?> k = Class.forName("io.github.lora4j.Kernels");
            Method m = k.getDeclaredMethod("route");
            m.setAccessible(true);
            return (String) m.invoke(null);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return "unknown (" + e + ")";
        }
    }

    /**
     * The kernel the OpenBLAS bundled with nd4j-native chooses on this machine with this process's environment: the
     * binding does not expose {@code openblas_get_corename}, so a Python child (same environment) loads the library
     * JavaCPP extracted and asks it.
     */
    private static String nd4jCore(String python) {
        try {
            Path cache = Path.of(org.bytedeco.javacpp.Loader.getCacheDir().getPath());
            Optional<Path> lib;
            try (Stream<Path> files = Files.walk(cache)) {
                lib = files.filter(f -> f.getFileName().toString().equals("libopenblas_nolapack.so.0")).findFirst();
            }
            if (lib.isEmpty()) {
                return "unknown (no libopenblas_nolapack.so.0 under " + cache + ")";
            }
            Process p = new ProcessBuilder(python, "-c", "import ctypes,sys; l=ctypes.CDLL(sys.argv[1]); "
                    + "l.openblas_get_corename.restype=ctypes.c_char_p; l.openblas_get_config.restype=ctypes.c_char_p; "
                    + "print(l.openblas_get_corename().decode(), '|', l.openblas_get_config().decode())", lib.get().toString())
                    .redirectErrorStream(true).start();
            String answer = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            p.waitFor();
            return answer;
        } catch (IOException | InterruptedException | RuntimeException e) {
            return "unknown (" + e + ")";
        }
    }

    /** One median of one side, round, shape and target. */
    record Result(String side, int round, int d, int r, int n, String target, Timing.Stats stats) {
        String json() {
            return String.format(java.util.Locale.ROOT, "{\"side\": \"%s\", \"round\": %d, \"d\": %d, \"r\": %d, \"n\": %d, "
                            + "\"target\": \"%s\", \"median_ms\": %.6f, \"p25_ms\": %.6f, \"p75_ms\": %.6f, \"calls\": %d}",
                    side, round, d, r, n, target, stats.medianMs(), stats.p25Ms(), stats.p75Ms(), stats.calls());
        }
    }
}
