package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.AdaDelta;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.schedule.MapSchedule;
import org.nd4j.linalg.schedule.RampSchedule;
import org.nd4j.linalg.schedule.ScheduleType;

/**
 * Issue 29, items 2, 6, 15, 16 and 17: a failed {@code saveState} destroyed the previous checkpoint; {@code loadState}
 * resumed state saved for other shapes with the same element counts, loaded (and initialised) a class named in the
 * file before refusing it, accepted values with which every later step fails, and the files were created 0600.
 */
class TrainerStateRegressionTest {

    private static final String JSON = LoraTrainer.STATE_CONFIG_FILE;
    private static final String TENSORS = LoraTrainer.STATE_TENSORS_FILE;

    @TempDir
    Path dir;

    /** A layer {@code [out, in]} with rank {@code r}, random A and B, and random gradients. */
    private static LoraLinear layer(long seed, int in, int out, int r) {
        LoraLinear l = io.github.lora4j.TestData.trainedLayer(DataType.FLOAT, seed, in, out,
                LoraConfig.builder().rank(r).alpha(2 * r).build(), false);
        setGradients(l, seed);
        return l;
    }

    private static void setGradients(LoraLinear l, long seed) {
        l.adapter("default").gradA().assign(gaussian(DataType.FLOAT, seed + 100, 0.1, l.adapter("default").gradA().shape()));
        l.adapter("default").gradB().assign(gaussian(DataType.FLOAT, seed + 101, 0.1, l.adapter("default").gradB().shape()));
    }

    /** A trainer over one layer, stepped twice, saved to {@link #dir}. */
    private LoraTrainer savedTrainer(LoraLinear l, IUpdater updater) throws IOException {
        LoraTrainer t = LoraTrainer.builder().updater(updater).build(l);
        t.step();
        setGradients(l, 7);
        t.step();
        t.saveState(dir);
        return t;
    }

    private static Map<String, byte[]> files(Path d) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            Map<String, byte[]> m = new TreeMap<>();
            for (Path p : s.collect(Collectors.toList())) {
                m.put(p.getFileName().toString(), Files.readAllBytes(p));
            }
            return m;
        }
    }

    private AdapterFormatException refused(List<LoraLinear> layers, String... fragments) {
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> LoraTrainer.loadState(dir, layers));
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "expected '" + f + "' in: " + e.getMessage());
        }
        return e;
    }

    private String json() throws IOException {
        return Files.readString(dir.resolve(JSON));
    }

    private void json(String text) throws IOException {
        Files.writeString(dir.resolve(JSON), text);
    }

    // ---------------------------------------------------------------- item 2

    private static boolean chattr(String flag, Path file) {
        try {
            Process p = new ProcessBuilder("chattr", flag, file.toString()).redirectErrorStream(true).start();
            return p.waitFor() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /**
     * The reproducer: {@code chattr +i trainer_state.json} makes the second rename fail. Before the fix the new
     * tensors stayed beside the old JSON, and loadState refused the pair: the checkpoint was lost. Needs root and a
     * file system with the immutable flag (CI runs as root); {@code SaveStateFailureTest} in the io package makes
     * the rename fail by injection everywhere.
     */
    @Test
    void aFailedRenameOfTheJsonKeepsThePreviousCheckpointLoadable() throws IOException {
        LoraLinear l = layer(1, 6, 5, 2);
        LoraTrainer t = savedTrainer(l, new Adam(1e-2));
        INDArray saved = t.updaterStateCopy(l, "default");
        Map<String, byte[]> before = files(dir);
        Path json = dir.resolve(JSON);
        assumeTrue(chattr("+i", json), "chattr +i is not available here (needs root and ext4-like file systems)");
        try {
            setGradients(l, 9);
            t.step();
            assertThrows(IOException.class, () -> t.saveState(dir));
        } finally {
            assertTrue(chattr("-i", json), "chattr -i");
        }
        Map<String, byte[]> after = files(dir);
        assertEquals(before.keySet(), after.keySet(), "no file added or removed");
        before.forEach((f, b) -> assertArrayEquals(b, after.get(f), f + " unchanged"));
        assertBitwiseEquals(saved, LoraTrainer.loadState(dir, List.of(l)).updaterStateCopy(l, "default"),
                "the previous checkpoint loads");
    }

    // ---------------------------------------------------------------- item 6

    @Test
    void stateSavedForOtherShapesWithEqualElementCountsIsRefused() throws IOException {
        // W 4x4, r = 2: A [2, 4], B [4, 2]. W 8x8, r = 1: A [1, 8], B [8, 1]. 8 elements each, so the counts agree.
        savedTrainer(layer(1, 4, 4, 2), new Adam(1e-2));
        LoraLinear other = layer(2, 8, 8, 1);
        refused(List.of(other), "states[0] (module '0', adapter 'default'): shape_A: expected [1, 8] (the layer's A "
                + "now), got [2, 4]");
    }

    @Test
    void theShapesAreCheckedForBToo() throws IOException {
        savedTrainer(layer(1, 4, 6, 2), new Adam(1e-2));
        String j = json();
        json(j.replaceFirst("\"shape_B\" : \\[ 6, 2 \\]", "\"shape_B\" : [ 2, 6 ]"));
        refused(List.of(layer(1, 4, 6, 2)), "shape_B: expected [6, 2] (the layer's B now), got [2, 6]");
    }

    // ---------------------------------------------------------------- item 15

    @Test
    void aClassOutsideTheAllowListIsRefusedBeforeItIsLoaded() throws IOException {
        LoraLinear l = layer(1, 6, 5, 2);
        savedTrainer(l, new Adam(new MapSchedule(ScheduleType.ITERATION, Map.of(0, 1e-2, 5, 1e-3))));
        String good = json();
        String probe = StaticInitProbe.class.getName(); // a name only: the class is not touched here
        json(good.replace("org.nd4j.linalg.learning.config.Adam", probe));
        refused(List.of(l), "@class must be one of", "got \"" + probe + "\"", "no class was loaded");
        json(good.replace("org.nd4j.linalg.schedule.MapSchedule", probe));
        refused(List.of(l), "@class must be one of", "no class was loaded");
        assertFalse(StaticInitProbe.Tripwire.tripped, "the static initialiser of a class named in the file ran");
    }

    // ---------------------------------------------------------------- item 16

    @Test
    void nanOrInfiniteOptimizerStateIsRefusedNamingModuleAdapterAndParameter() throws IOException {
        LoraLinear l = layer(1, 6, 5, 2);
        savedTrainer(l, new Adam(1e-2));
        Path t = dir.resolve(TENSORS);
        byte[] good = Files.readAllBytes(t);
        long headerLength = ByteBuffer.wrap(good).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        String header = new String(good, 8, (int) headerLength, StandardCharsets.UTF_8);
        assertTrue(header.indexOf("0/default/lora_A") < header.indexOf("0/default/lora_B"), header);
        for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY}) {
            byte[] bytes = good.clone();
            // The first element of lora_A's state: m of A[0, 0] (the data starts right after the header).
            ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).putFloat((int) (8 + headerLength), bad);
            Files.write(t, bytes);
            refused(List.of(l), "tensor '0/default/lora_A' (module '0', adapter 'default', lora_A): expected finite "
                    + "updater state, found " + bad);
        }
        byte[] bytes = good.clone();
        // Adam's A state is [m | v], 12 + 12 floats: element 12 is v of A[0, 0], a second moment.
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).putFloat((int) (8 + headerLength + 4 * 12), -1f);
        Files.write(t, bytes);
        refused(List.of(l), "expected element 12 >= 0 (part 2 of 2 of Adam's state");
    }

    @Test
    void infiniteOrNaNLearningRatesAreRefusedByName() throws IOException {
        LoraLinear l = layer(1, 6, 5, 2);
        savedTrainer(l, new Adam(1e-2));
        String good = json();
        assertTrue(good.contains("\"learningRate\" : 0.01"), good);
        for (String bad : new String[] {"\"Infinity\"", "1e999", "\"NaN\"", "-0.5"}) {
            json(good.replace("\"learningRate\" : 0.01", "\"learningRate\" : " + bad));
            refused(List.of(l), "updater: Adam learning rate at iteration 2, epoch 0: expected a finite number >= 0");
        }
        savedTrainer(l, new Sgd(new MapSchedule(ScheduleType.ITERATION, Map.of(0, 0.1, 1, 0.05))));
        String schedule = json();
        json(schedule.replace("0.05", "\"Infinity\""));
        refused(List.of(l), "Sgd learning rate at iteration 2, epoch 0: expected a finite number >= 0, got Infinity");
    }

    @Test
    void allZeroOrOutOfRangeHyperParametersAreRefusedByName() throws IOException {
        LoraLinear l = layer(1, 6, 5, 2);
        savedTrainer(l, new Adam(1e-2));
        String good = json();
        json(good.replace("\"learningRate\" : 0.01", "\"learningRate\" : 0.0").replace("\"beta1\" : 0.9", "\"beta1\" : 0.0")
                .replace("\"beta2\" : 0.999", "\"beta2\" : 0.0").replace("\"epsilon\" : 1.0E-8", "\"epsilon\" : 0.0"));
        refused(List.of(l), "Adam epsilon: expected a finite number > 0", "got 0.0");
        json(good.replace("\"beta1\" : 0.9", "\"beta1\" : 1.0"));
        refused(List.of(l), "Adam beta1: expected a number in [0, 1)", "got 1.0");
        json(good.replace("\"beta2\" : 0.999", "\"beta2\" : -0.5"));
        refused(List.of(l), "Adam beta2: expected a number in [0, 1)");

        savedTrainer(l, new Nesterovs(0.01, 0.9));
        json(json().replace("\"momentum\" : 0.9", "\"momentum\" : -1.0"));
        refused(List.of(l), "Nesterovs momentum at iteration 2, epoch 0: expected a finite number >= 0, got -1.0");
        savedTrainer(l, new AdaDelta());
        json(json().replace("\"rho\" : 0.95", "\"rho\" : 2.0"));
        refused(List.of(l), "AdaDelta rho: expected a number in [0, 1], got 2.0");
    }

    @Test
    void saveStateRefusesToWriteWhatLoadStateWouldRefuse() throws IOException {
        LoraLinear l = layer(1, 6, 5, 2);
        LoraTrainer ok = savedTrainer(l, new Adam(1e-2));
        Map<String, byte[]> before = files(dir);
        // Every step of this trainer fails (NaN learning rate): its state is not worth a checkpoint.
        LoraTrainer nan = LoraTrainer.builder().updater(new Sgd(Double.NaN)).build(l);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> nan.saveState(dir));
        assertTrue(e.getMessage().contains("Sgd learning rate at iteration 0, epoch 0: expected a finite number >= 0, "
                + "got NaN"), e.getMessage());
        // ND4J writes RampSchedule without its fields, so it could never be read back.
        LoraTrainer ramp = LoraTrainer.builder().updater(new Sgd(new RampSchedule(
                new MapSchedule(ScheduleType.ITERATION, Map.of(0, 0.1)), 3))).build(l);
        e = assertThrows(IllegalStateException.class, () -> ramp.saveState(dir));
        assertTrue(e.getMessage().contains("loadState could not resume it") && e.getMessage().contains("RampSchedule"),
                e.getMessage());
        Map<String, byte[]> after = files(dir);
        assertEquals(before.keySet(), after.keySet());
        before.forEach((f, b) -> assertArrayEquals(b, after.get(f), f + " unchanged by a refused save"));
        assertBitwiseEquals(ok.updaterStateCopy(l, "default"),
                LoraTrainer.loadState(dir, List.of(l)).updaterStateCopy(l, "default"), "the checkpoint still loads");
    }

    // ---------------------------------------------------------------- item 17

    private static int umask() throws IOException, InterruptedException {
        Process p = new ProcessBuilder("sh", "-c", "umask").start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).trim();
        assertEquals(0, p.waitFor());
        return Integer.parseInt(out, 8);
    }

    @Test
    void trainerStateFilesGetTheUmasksModeAndReplacedFilesKeepTheirs() throws Exception {
        assumeTrue(dir.getFileSystem().supportedFileAttributeViews().contains("posix"), "not a POSIX file system");
        int bits = 0666 & ~umask();
        StringBuilder s = new StringBuilder();
        for (int i = 8; i >= 0; i--) {
            s.append((bits >> i & 1) == 1 ? "rwx".charAt(2 - i % 3) : '-');
        }
        Set<PosixFilePermission> expected = PosixFilePermissions.fromString(s.toString());
        LoraLinear l = layer(1, 6, 5, 2);
        LoraTrainer t = savedTrainer(l, new Adam(1e-2));
        for (String f : List.of(JSON, TENSORS)) {
            assertEquals(expected, Files.getPosixFilePermissions(dir.resolve(f)), f + " of a new save (was 0600)");
        }
        Set<PosixFilePermission> chosen = PosixFilePermissions.fromString("rw-r-----");
        Files.setPosixFilePermissions(dir.resolve(JSON), chosen);
        Files.setPosixFilePermissions(dir.resolve(TENSORS), chosen);
        t.saveState(dir);
        assertEquals(chosen, Files.getPosixFilePermissions(dir.resolve(JSON)));
        assertEquals(chosen, Files.getPosixFilePermissions(dir.resolve(TENSORS)));
    }
}
