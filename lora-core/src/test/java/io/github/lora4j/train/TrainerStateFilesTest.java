package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.Lora4j;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * {@link LoraTrainer#saveState} / {@link LoraTrainer#loadState}: what the files hold, and that the reader refuses
 * hostile or mismatched files with an {@link AdapterFormatException} in bounded time, before building anything and
 * without touching the model.
 */
class TrainerStateFilesTest {

    private static final String JSON = LoraTrainer.STATE_CONFIG_FILE;
    private static final String TENSORS = LoraTrainer.STATE_TENSORS_FILE;

    /** A model trained 3 Adam steps, with its adapter and trainer state saved in {@code dir}. */
    private static LoraModel savedRun(Path dir) throws IOException {
        LoraModel m = TrainerResumeTest.startModel(40);
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2)).clipGradientNorm(2).weightDecay(0.01).build(m);
        TrainerResumeTest.run(m, t, 40, 0, 3, 1);
        m.save(dir, "default");
        t.saveState(dir);
        return m;
    }

    /** A fresh model holding the adapter saved in {@code dir}. */
    private static LoraModel reloaded(Path dir) throws IOException {
        LoraModel m = TrainerResumeTest.baseModel();
        m.load(dir, "default");
        return m;
    }

    /** {@link #savedRun} in {@code dir}, then {@link #reloaded} from it: the model a resumed run would use. */
    private static LoraModel savedAndReloaded(Path dir) throws IOException {
        savedRun(dir);
        return reloaded(dir);
    }

    private static Map<String, long[]> adapterBits(LoraModel m) {
        Map<String, long[]> s = new LinkedHashMap<>();
        for (Map.Entry<String, LoraLinear> e : m.loraModules().entrySet()) {
            for (String a : e.getValue().adapterNames()) {
                s.put(e.getKey() + "/" + a + "/A", bits(e.getValue().loraA(a)));
                s.put(e.getKey() + "/" + a + "/B", bits(e.getValue().loraB(a)));
            }
            s.put(e.getKey() + "/W", bits(e.getValue().weight()));
        }
        return s;
    }

    /** Refused with an AdapterFormatException whose message contains {@code expected}; the model is unchanged. */
    private static AdapterFormatException assertRefused(Path dir, LoraModel m, String expected) {
        Map<String, long[]> before = adapterBits(m);
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> LoraTrainer.loadState(dir, m));
        assertTrue(e.getMessage().contains(expected), "expected a message containing '" + expected + "', got: "
                + e.getMessage());
        Map<String, long[]> after = adapterBits(m);
        assertEquals(before.keySet(), after.keySet(), "adapters after a refused load");
        before.forEach((k, v) -> assertArrayEquals(v, after.get(k), k + " after a refused load"));
        return e;
    }

    private static String json(Path dir) throws IOException {
        return Files.readString(dir.resolve(JSON));
    }

    private static void writeJson(Path dir, String text) throws IOException {
        Files.writeString(dir.resolve(JSON), text);
    }

    // ---------------------------------------------------------------- what is saved

    @Test
    void theJsonHoldsTheSettingsCountersModulesAndOneIndexEntryPerAdapter(@TempDir Path dir) throws IOException {
        savedRun(dir);
        String j = json(dir);
        for (String s : new String[] {"\"format\" : \"lora4j-trainer-state\"", "\"iteration\" : 3", "\"epoch\" : 1",
                "\"clip_gradient_norm\" : 2.0", "\"weight_decay\" : 0.01", "org.nd4j.linalg.learning.config.Adam",
                "\"enc.q\"", "\"dec.v\"", "\"enc.q/default/lora_A\"",
                "\"lora4j_version\" : \"" + Lora4j.version() + "\""}) {
            assertTrue(j.contains(s), "expected " + s + " in " + j);
        }
        assertFalse(j.contains("enc.mid"), "the untargeted module has no trainer state: " + j);
    }

    @Test
    void aTrainerOverAModelTrainsEveryTargetedModuleAndNothingElse() {
        LoraModel m = TrainerResumeTest.startModel(50);
        LoraTrainer t = LoraTrainer.builder().updater(new Sgd(0.1)).build(m);
        assertEquals(List.of("enc.q", "dec.v"), t.layerNames());
        assertEquals(List.of(m.module("enc.q"), m.module("dec.v")), t.layers());
        Map<String, long[]> before = adapterBits(m);
        TrainerResumeTest.run(m, t, 50, 0, 1, -1);
        Map<String, long[]> after = adapterBits(m);
        for (String p : List.of("enc.q", "dec.v")) {
            assertFalse(java.util.Arrays.equals(before.get(p + "/default/A"), after.get(p + "/default/A")), p + " A");
            assertFalse(java.util.Arrays.equals(before.get(p + "/default/B"), after.get(p + "/default/B")), p + " B");
            assertArrayEquals(before.get(p + "/W"), after.get(p + "/W"), p + " W");
        }
        assertTrue(m.module("enc.mid").adapterNames().isEmpty(), "the untargeted module got no adapter");
    }

    @Test
    void aModelWithoutLoraCannotBeTrained() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> LoraTrainer.builder().updater(new Sgd(0.1)).build(TrainerResumeTest.baseModel()));
        assertTrue(e.getMessage().contains("applyLora"), e.getMessage());
    }

    @Test
    void aStatelessUpdaterSavesNoTensorsAndResumesItsCounters(@TempDir Path dir) throws IOException {
        LoraModel m = TrainerResumeTest.startModel(60);
        LoraTrainer t = LoraTrainer.builder().updater(new Sgd(0.05)).build(m);
        TrainerResumeTest.run(m, t, 60, 0, 2, -1);
        t.saveState(dir);
        assertFalse(json(dir).contains("lora_A"), json(dir));
        LoraTrainer back = LoraTrainer.loadState(dir, m);
        assertEquals(2, back.iteration());
        assertEquals(new Sgd(0.05), back.updater());
        assertEquals(0, back.updaterStateSize());
    }

    @Test
    void aTrainerOverLayersSavesThemByIndex(@TempDir Path dir) throws IOException {
        LoraLinear a = io.github.lora4j.TestData.trainedLayer(DataType.DOUBLE, 70, 5, 4,
                LoraConfig.builder().rank(2).alpha(2).build(), false);
        LoraLinear b = io.github.lora4j.TestData.trainedLayer(DataType.DOUBLE, 71, 4, 3,
                LoraConfig.builder().rank(1).alpha(2).build(), false);
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2)).build(a, b);
        a.adapter("default").gradA().assign(gaussian(DataType.DOUBLE, 72, 1, 2, 5));
        b.adapter("default").gradB().assign(gaussian(DataType.DOUBLE, 73, 1, 3, 1));
        t.step();
        t.saveState(dir);
        assertTrue(json(dir).contains("\"0/default/lora_A\"") && json(dir).contains("F64"), json(dir));
        LoraTrainer back = LoraTrainer.loadState(dir, List.of(a, b));
        assertEquals(List.of("0", "1"), back.layerNames());
        assertBitwiseEquals(t.updaterStateCopy(a, "default"), back.updaterStateCopy(a, "default"), "state of layer 0");
        assertBitwiseEquals(t.updaterStateCopy(b, "default"), back.updaterStateCopy(b, "default"), "state of layer 1");
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> LoraTrainer.loadState(dir, List.of(b, a)));
        assertTrue(e.getMessage().contains("shape_A: expected [1, 4] (the layer's A now), got [2, 5]"), e.getMessage());
    }

    // ---------------------------------------------------------------- hostile and mismatched files

    @Test
    void missingFilesAreNoSuchFile(@TempDir Path dir) throws IOException {
        LoraModel m = savedRun(dir);
        Files.delete(dir.resolve(TENSORS));
        assertThrows(NoSuchFileException.class, () -> LoraTrainer.loadState(dir, m));
        Files.delete(dir.resolve(JSON));
        assertThrows(NoSuchFileException.class, () -> LoraTrainer.loadState(dir, m));
    }

    @Test
    @Timeout(value = 20, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void aDeviceAFifoOrADirectoryInPlaceOfAFileIsRefusedWithoutReadingIt(@TempDir Path dir) throws Exception {
        LoraModel fresh = savedAndReloaded(dir);
        Path json = dir.resolve(JSON);
        Path saved = dir.resolve("saved.json");
        Files.move(json, saved);
        Files.createSymbolicLink(json, Path.of("/dev/zero"));
        assertRefused(dir, fresh, "regular file");
        Files.delete(json);
        Process p = new ProcessBuilder("mkfifo", json.toString()).start();
        assertEquals(0, p.waitFor(), "mkfifo");
        assertRefused(dir, fresh, "regular file");
        Files.delete(json);
        Files.createDirectory(json);
        assertRefused(dir, fresh, "regular file");
        Files.delete(json);
        Files.move(saved, json);
        Path tensors = dir.resolve(TENSORS);
        Files.delete(tensors);
        assertEquals(0, new ProcessBuilder("mkfifo", tensors.toString()).start().waitFor(), "mkfifo");
        assertRefused(dir, fresh, "regular file");
    }

    @Test
    void aJsonFileAboveTheCapIsRefused(@TempDir Path dir) throws IOException {
        LoraModel fresh = savedAndReloaded(dir);
        writeJson(dir, json(dir) + " ".repeat(TrainerStateFiles.MAX_JSON_BYTES));
        assertRefused(dir, fresh, "at most " + TrainerStateFiles.MAX_JSON_BYTES + " bytes");
    }

    @Test
    void filesFromTwoDifferentSavesAreRefusedBySaveId(@TempDir Path dir, @TempDir Path other) throws IOException {
        savedRun(dir);
        savedRun(other);
        LoraModel fresh = reloaded(dir);
        // What a crash between saveState's two renames leaves: the new tensors beside the old JSON.
        Files.copy(other.resolve(TENSORS), dir.resolve(TENSORS), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        assertRefused(dir, fresh, "save_id");
    }

    @Test
    void aTensorFileOfTheWrongSizeIsRefusedBeforeItsDataIsRead(@TempDir Path dir) throws IOException {
        LoraModel fresh = savedAndReloaded(dir);
        Path t = dir.resolve(TENSORS);
        byte[] good = Files.readAllBytes(t);
        Files.write(t, java.util.Arrays.copyOf(good, good.length + 1));
        assertRefused(dir, fresh, "tensors cover 416 bytes of data, but the file holds 417 bytes");
        Files.write(t, java.util.Arrays.copyOf(good, good.length - 4));
        assertRefused(dir, fresh, "tensors cover 416 bytes of data, but the file holds 412 bytes");
        ByteBuffer lie = ByteBuffer.wrap(good.clone()).order(ByteOrder.LITTLE_ENDIAN);
        lie.putLong(0, Long.MAX_VALUE);
        Files.write(t, lie.array());
        assertRefused(dir, fresh, "header length");
    }

    @Test
    void aHeaderDeclaringAHugeShapeIsRefusedBeforeAnyDataIsRead(@TempDir Path dir) throws IOException {
        LoraModel fresh = savedAndReloaded(dir);
        Path t = dir.resolve(TENSORS);
        byte[] bytes = Files.readAllBytes(t);
        int headerLength = (int) ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        String header = new String(bytes, 8, headerLength, StandardCharsets.UTF_8);
        // Same byte count, so the file size still matches and only the declared shape lies: the metadata's
        // format string (not checked) gives up the characters the longer shape takes.
        String hostile = header.replaceFirst("\"shape\":\\[\\d+\\]", "\"shape\":[75000000]");
        int grown = hostile.length() - header.length();
        hostile = hostile.replace("lora4j-trainer-state", "lora4j-trainer-state".substring(0, 20 - grown));
        assertEquals(header.length(), hostile.length());
        byte[] h = hostile.getBytes(StandardCharsets.UTF_8);
        System.arraycopy(h, 0, bytes, 8, h.length);
        Files.write(t, bytes);
        assertRefused(dir, fresh, "shape [75000000] of F32 needs 300000000 bytes, but data_offsets");
    }

    @Test
    void onlyNd4jUpdaterClassesAreInstantiatedFromTheJson(@TempDir Path dir) throws IOException {
        LoraModel fresh = savedAndReloaded(dir);
        String good = json(dir);
        writeJson(dir, good.replace("org.nd4j.linalg.learning.config.Adam", "java.lang.ProcessBuilder"));
        assertRefused(dir, fresh, "updater: expected one of ND4J's updaters");
        writeJson(dir, good.replace("org.nd4j.linalg.learning.config.Adam", "com.example.Gadget"));
        assertRefused(dir, fresh, "updater");
        writeJson(dir, good.replace("\"learningRate\"", "\"unknownField\""));
        assertRefused(dir, fresh, "updater");
    }

    @Test
    void aStateThatDoesNotFitTheModelIsRefused(@TempDir Path dir) throws IOException {
        savedRun(dir);
        // Modules: only q targeted.
        LoraModel onlyQ = TrainerResumeTest.baseModel().applyLora(LoraConfig.builder().rank(2).alpha(4).build(),
                List.of("q"));
        assertRefused(dir, onlyQ, "modules: expected the trainer's layers [enc.q]");
        // Rank 3 instead of 2: the state sizes differ.
        LoraModel rank3 = TrainerResumeTest.baseModel().applyLora(LoraConfig.builder().rank(3).alpha(4).build(),
                List.of("q", "v"));
        assertRefused(dir, rank3, "shape_A: expected [3, 8] (the layer's A now), got [2, 8]");
        // An adapter of another name.
        LoraModel renamed = TrainerResumeTest.baseModel();
        renamed.load(dir, "other");
        assertRefused(dir, renamed, "has no adapter 'default'");
        // DOUBLE layers for a FLOAT state.
        LoraModel doubles = LoraModel.builder()
                .linear("enc.q", gaussian(DataType.DOUBLE, 1, 1, 6, 8), null)
                .linear("enc.mid", gaussian(DataType.DOUBLE, 2, 1, 7, 6), null)
                .linear("dec.v", gaussian(DataType.DOUBLE, 3, 1, 5, 7), null)
                .build().applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("q", "v"));
        assertRefused(dir, doubles, "dtype: expected F64");
        // Corrupt counters and settings.
        String good = json(dir);
        LoraModel fresh = reloaded(dir);
        writeJson(dir, good.replace("\"iteration\" : 3", "\"iteration\" : -3"));
        assertRefused(dir, fresh, "iteration");
        writeJson(dir, good.replace("\"weight_decay\" : 0.01", "\"weight_decay\" : \"NaN\""));
        assertRefused(dir, fresh, "weight_decay");
        writeJson(dir, good.replace("\"format_version\" : 2", "\"format_version\" : 3"));
        assertRefused(dir, fresh, "format_version: expected 2, got 3");
        writeJson(dir, good.replace("\"format_version\" : 2", "\"format_version\" : 1"));
        assertRefused(dir, fresh, "version 1 files lack the A/B shapes");
        writeJson(dir, good.replace("\"epoch\" : 1,", "\"epoch\" : 1, \"epoch\" : 2,"));
        assertRefused(dir, fresh, "Duplicate field");
        writeJson(dir, good.substring(0, good.length() / 2));
        assertRefused(dir, fresh, "expected valid JSON");
    }

    @Test
    void bothIndexesRefuseAnUnknownModuleAnUnknownAdapterAndAnEntryListedTwice(@TempDir Path dir) throws IOException {
        savedRun(dir);
        LoraModel m = reloaded(dir);
        String good = json(dir);
        int states = good.indexOf("\"states\"");
        int steps = good.indexOf("\"adapter_steps\"");
        assertTrue(states > 0 && steps > states, good);
        String head = good.substring(0, states);
        String stateIndex = good.substring(states, steps);
        String stepIndex = good.substring(steps);
        // Each index on its own: the states index (A, B and the updater's tensors) and the adapter_steps index.
        writeJson(dir, head + stateIndex.replace("\"dec.v\"", "\"enc.q\"") + stepIndex);
        assertRefused(dir, m, "states[1]: module 'enc.q', adapter 'default' is listed twice");
        writeJson(dir, head + stateIndex.replace("\"dec.v\"", "\"dec.w\"") + stepIndex);
        assertRefused(dir, m, "states[1]: module 'dec.w' is not one of [enc.q, dec.v]");
        writeJson(dir, head + stateIndex + stepIndex.replace("\"dec.v\"", "\"enc.q\""));
        assertRefused(dir, m, "adapter_steps[1]: module 'enc.q', adapter 'default' is listed twice");
        writeJson(dir, head + stateIndex + stepIndex.replace("\"dec.v\"", "\"dec.w\""));
        assertRefused(dir, m, "adapter_steps[1]: module 'dec.w' is not one of [enc.q, dec.v]");
        writeJson(dir, head + stateIndex + stepIndex.replace("\"default\"", "\"other\""));
        assertRefused(dir, m, "adapter_steps[0]: module 'enc.q' has no adapter 'other'");
    }

    /**
     * Mutated files: a few random bytes of either file overwritten. Each load either succeeds or is an
     * AdapterFormatException; nothing else escapes, and the model is never changed.
     */
    @Property(tries = 150)
    void mutatedStateFilesLoadOrAreRefusedAndNeverChangeTheModel(@ForAll @IntRange(min = 0, max = 1_000_000) int seed)
            throws IOException {
        Path dir = Fixture.dir();
        SplittableRandom rng = new SplittableRandom(seed);
        Path victim = dir.resolve(rng.nextBoolean() ? JSON : TENSORS);
        byte[] original = Files.readAllBytes(victim);
        byte[] bytes = original.clone();
        int changes = 1 + rng.nextInt(4);
        for (int i = 0; i < changes; i++) {
            int at = rng.nextInt(bytes.length);
            bytes[at] = rng.nextBoolean() ? (byte) rng.nextInt(256) : (byte) JSON_BYTES.charAt(rng.nextInt(JSON_BYTES.length()));
        }
        Files.write(victim, bytes);
        try {
            Map<String, long[]> before = adapterBits(Fixture.model);
            try {
                LoraTrainer.loadState(dir, Fixture.model);
            } catch (AdapterFormatException expected) {
                // refused: fine
            }
            Map<String, long[]> after = adapterBits(Fixture.model);
            before.forEach((k, v) -> assertArrayEquals(v, after.get(k), k + " after loading a mutated file"));
        } finally {
            Files.write(victim, original);
        }
    }

    /** Characters that keep a mutated JSON close to valid, so mutations reach past the parser. */
    private static final String JSON_BYTES = "0123456789,:[]{}\"-.e ";

    /** One saved run shared by the fuzz tries (deleted at JVM exit). */
    private static final class Fixture {
        static Path dir;
        static LoraModel model;

        static synchronized Path dir() throws IOException {
            if (dir == null) {
                dir = Files.createTempDirectory("lora4j-trainer-fuzz");
                savedRun(dir);
                model = reloaded(dir);
                Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                    try {
                        TrainerResumeTest.deleteRecursively(dir);
                    } catch (IOException e) {
                        // best effort: a temp directory
                    }
                }));
            }
            return dir;
        }
    }
}
