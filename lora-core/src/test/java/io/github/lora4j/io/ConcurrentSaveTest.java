package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Issue 29, item 1: two saves into one directory, reached through a symbolic link, left a mixed pair that read
 * accepted (one save's tensors with the other's config) in 270 of 400 trials, and one of the two calls returned
 * normally. The JVM lock was keyed by the path as spelled, and the fixed temporary names were deleted by whichever
 * save came second. Now the second save waits: the lock is keyed by the directory's identity, an OS lock excludes
 * other processes, and temporaries have names of their own. Every save carries its id in both files (the tensors'
 * values and {@code base_model_name_or_path}), so a mixed pair shows.
 */
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ConcurrentSaveTest {

    private static final int ROUNDS = 60;

    @TempDir
    Path tmp;

    /**
     * Renames as a save does, then waits 3 ms after putting the model file in place: a wider window between a save's
     * two renames, so that two saves not excluding each other would interleave there in most rounds.
     */
    static final PeftAdapterFiles.FileOps SLOW_BETWEEN_RENAMES = (from, to) -> {
        PeftAdapterFiles.FileOps.ATOMIC.move(from, to);
        if (to.getFileName().toString().equals(PeftAdapterFiles.MODEL_FILE)) {
            try {
                Thread.sleep(3);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    };

    /** Saves adapter {@code id} into {@code dir} with {@link #SLOW_BETWEEN_RENAMES}. */
    static void slowSave(int id, Path dir) throws IOException {
        SafeFiles.OPS.set(SLOW_BETWEEN_RENAMES);
        try {
            saver(id).save(dir, "default");
        } finally {
            SafeFiles.OPS.remove();
        }
    }

    /** A one-module adapter whose A and B hold {@code id} everywhere, with {@code base_model_name_or_path save-id}. */
    static PeftAdapterFiles.Saver saver(int id) {
        LoraLinear layer = LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 3, 4), null, WeightLayout.OUT_IN);
        layer.addAdapter("default", LoraConfig.builder().rank(2).alpha(4).init(LoraInit.ZERO).build());
        layer.setAdapterWeights("default", Nd4j.valueArrayOf(new long[] {2, 4}, (float) id),
                Nd4j.valueArrayOf(new long[] {3, 2}, (float) id));
        return PeftAdapterFiles.saver().linears(Map.of("m", layer)).baseModelNameOrPath("save-" + id);
    }

    /** The pair in {@code dir} comes from one save: its config's id equals every tensor value. */
    private static int assertOnePair(Path dir, String when) throws IOException {
        PeftAdapter a = PeftAdapterFiles.read(dir);
        int id = Integer.parseInt(a.config().baseModelNameOrPath().orElseThrow().substring("save-".length()));
        double lo = Math.min(a.a("m").minNumber().doubleValue(), a.b("m").minNumber().doubleValue());
        double hi = Math.max(a.a("m").maxNumber().doubleValue(), a.b("m").maxNumber().doubleValue());
        if (lo != id || hi != id) {
            fail(when + ": a mixed pair: the config of save " + id + " beside tensors holding " + lo + ".." + hi);
        }
        return id;
    }

    @Test
    void twoThreadsSavingThroughASymbolicLinkAndTheRealPathNeverLeaveAMixedPair() throws Exception {
        Path real = Files.createDirectories(tmp.resolve("real"));
        Path link = Files.createSymbolicLink(tmp.resolve("link"), real);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            for (int round = 0; round < ROUNDS; round++) {
                CyclicBarrier start = new CyclicBarrier(2);
                int first = 2 * round;
                Future<?> a = pool.submit(() -> {
                    start.await();
                    slowSave(first, real);
                    return null;
                });
                Future<?> b = pool.submit(() -> {
                    start.await();
                    slowSave(first + 1, link);
                    return null;
                });
                a.get(30, TimeUnit.SECONDS); // both return normally: the second waited
                b.get(30, TimeUnit.SECONDS);
                int id = assertOnePair(real, "round " + round);
                assertTrue(id == first || id == first + 1, "round " + round + ": the pair of save " + id);
            }
        } finally {
            pool.shutdownNow();
        }
        assertOnlyThePairAndTheLock(real);
    }

    @Test
    void twoProcessesSavingIntoOneDirectoryNeverLeaveAMixedPair() throws Exception {
        Path real = Files.createDirectories(tmp.resolve("real"));
        Path link = Files.createSymbolicLink(tmp.resolve("link"), real);
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-Xmx512m", "-cp", System.getProperty("java.class.path"),
                ConcurrentSaveChild.class.getName(), link.toString()));
        Process child = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        try (BufferedReader fromChild = new BufferedReader(new InputStreamReader(child.getInputStream(),
                StandardCharsets.UTF_8));
             PrintStream toChild = new PrintStream(child.getOutputStream(), true, StandardCharsets.UTF_8)) {
            assertEquals("ready", answer(fromChild, "ready"), "the child process started");
            saver(-2).save(real, "default"); // load this side too, so both start saving at once
            for (int round = 0; round < ROUNDS; round++) {
                int mine = 2 * round;
                int theirs = mine + 1;
                toChild.println("save " + theirs);
                slowSave(mine, real);
                assertEquals("done " + theirs, answer(fromChild, " " + theirs), "the child's save returned normally");
                int id = assertOnePair(real, "round " + round);
                assertTrue(id == mine || id == theirs, "round " + round + ": the pair of save " + id);
            }
        } finally {
            child.destroy();
            child.waitFor(10, TimeUnit.SECONDS);
        }
        assertOnlyThePairAndTheLock(real);
    }

    /** The child's next protocol line (ND4J may print other lines to stdout first). */
    private static String answer(BufferedReader in, String marker) throws IOException {
        String line;
        while ((line = in.readLine()) != null) {
            if (line.equals("ready") || line.startsWith("done ") || line.startsWith("error ")) {
                return line;
            }
        }
        fail("the child process ended without answering (" + marker + ")");
        return null;
    }

    private static void assertOnlyThePairAndTheLock(Path dir) throws IOException {
        Map<String, byte[]> files = IoTestData.files(dir);
        assertNotNull(files.get(SafeFiles.LOCK_FILE));
        assertEquals(java.util.Set.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE, SafeFiles.LOCK_FILE),
                files.keySet(), "no temporary file or backup left behind");
    }
}
