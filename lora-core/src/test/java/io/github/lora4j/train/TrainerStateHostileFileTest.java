package io.github.lora4j.train;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.learning.config.Adam;

/**
 * Issue 29, items 8 and 10, and the trainer's share of item 9: hostile {@code trainer_state.json} and
 * {@code trainer_state.safetensors} under their size caps. Before the fix a number of 10^6 digits stalled
 * {@code loadState} for 14 s (3·10^6: 123 s), a nesting 100,000 deep (or 50,000 nested schedules) threw
 * {@link StackOverflowError}, and the tensor header was one JSON tree. Each is now an {@link AdapterFormatException}
 * within the timeout, in the {@code -Xmx256m} execution (the class name holds "HostileFile", see lora-core/pom.xml).
 */
@Timeout(value = 10, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class TrainerStateHostileFileTest {

    private static final String JSON = LoraTrainer.STATE_CONFIG_FILE;
    private static final String TENSORS = LoraTrainer.STATE_TENSORS_FILE;

    @TempDir
    Path dir;

    private LoraLinear layer;
    private String good;

    @BeforeEach
    void save() throws IOException {
        layer = io.github.lora4j.TestData.trainedLayer(DataType.FLOAT, 1, 6, 5, LoraConfig.builder().rank(2).alpha(4)
                .build(), false);
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2)).build(layer);
        layer.adapter("default").gradA().assign(0.1);
        t.step();
        t.saveState(dir);
        good = Files.readString(dir.resolve(JSON));
    }

    /** Writes {@code before + unit × n + after} into {@code file}, streamed. */
    private static void write(Path file, String before, String unit, long n, String after) throws IOException {
        byte[] u = unit.getBytes(StandardCharsets.US_ASCII);
        try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(file), 1 << 16)) {
            out.write(before.getBytes(StandardCharsets.UTF_8));
            for (long i = 0; i < n; i++) {
                out.write(u);
            }
            out.write(after.getBytes(StandardCharsets.UTF_8));
        }
    }

    /** The saved JSON with {@code field}'s value {@code "value"} replaced by {@code unit × n}. */
    private void replaceValue(String field, String value, String prefix, String unit, long n, String suffix)
            throws IOException {
        String key = "\"" + field + "\" : " + value;
        int at = good.indexOf(key);
        assertTrue(at >= 0, key + " in " + good);
        write(dir.resolve(JSON), good.substring(0, at) + "\"" + field + "\" : " + prefix, unit, n,
                suffix + good.substring(at + key.length()));
    }

    private AdapterFormatException refused(String... fragments) {
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> LoraTrainer.loadState(dir, List.of(layer)));
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "expected '" + f + "' in: " + e.getMessage());
        }
        assertTrue(e.getMessage().length() < 2000, "a short message: " + e.getMessage().length() + " characters");
        return e;
    }

    @ParameterizedTest(name = "{0} digits")
    @ValueSource(ints = {1_000_000, 3_000_000})
    void aNumberOfMillionsOfDigitsIsRefusedWithoutParsingIt(int digits) throws IOException {
        replaceValue("iteration", "1", "1", "0", digits - 1, "");
        refused("exceeds a limit of this reader", "Number value length");
        replaceValue("learningRate", "0.01", "0.", "1", digits, "");
        refused("exceeds a limit of this reader");
    }

    @Test
    void aNestingOneHundredThousandDeepIsRefusedNotAStackOverflow() throws IOException {
        int depth = 100_000;
        // In a field whose refusal names the value: before the fix, printing it overflowed the stack.
        replaceValue("iteration", "1", "", "[", depth, "]".repeat(depth));
        refused("nesting at most " + TrainerStateFiles.MAX_DEPTH + " deep", "nesting depth");
        // In a field nobody reads: before the fix, accepted after building the whole tree.
        write(dir.resolve(JSON), good.substring(0, good.lastIndexOf('}')) + ", \"junk\" : ", "[", depth,
                "]".repeat(depth) + "}");
        refused("nesting depth");
        replaceValue("beta1", "0.9", "", "{\"a\":", depth, "1" + "}".repeat(depth));
        refused("nesting depth");
    }

    @Test
    void fiftyThousandNestedSchedulesAreRefusedNotAStackOverflow() throws IOException {
        int depth = 50_000;
        replaceValue("learningRate", "0.01", "\"NaN\", \"learningRateSchedule\" : ",
                "{\"@class\":\"org.nd4j.linalg.schedule.RampSchedule\",\"numIter\":2,\"baseSchedule\":", depth,
                "{\"@class\":\"org.nd4j.linalg.schedule.FixedSchedule\",\"value\":0.1}" + "}".repeat(depth));
        refused("nesting depth");
    }

    @Test
    void aJsonTreeOfMillionsOfTokensUnderTheSizeCapIsRefusedBeforeItIsBuilt() throws IOException {
        // 8 MiB of empty arrays: about 2.8 million tokens, 1.4 million array nodes as a tree.
        long n = (TrainerStateFiles.MAX_JSON_BYTES - good.length() - 100) / 3;
        write(dir.resolve(JSON), good.substring(0, good.lastIndexOf('}')) + ", \"junk\" : [[]", ",[]", n - 1, "]}");
        refused("more than " + TrainerStateFiles.MAX_TOKENS + " JSON tokens");
    }

    @Test
    void aTensorFileWithAJunkFieldInItsHeaderIsRefusedAsItComes() throws IOException {
        // The saved file with 6 MiB of junk in its first entry: under the 8 MiB header cap the trainer had, which
        // built the header as one tree and ignored the junk field. Data and save id stay valid.
        Path t = dir.resolve(TENSORS);
        byte[] saved = Files.readAllBytes(t);
        int headerLength = (int) ByteBuffer.wrap(saved).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        String header = new String(saved, 8, headerLength, StandardCharsets.UTF_8).stripTrailing();
        int cut = header.indexOf("\"data_offsets\":[0,");
        cut = header.indexOf(']', cut) + 1;
        String before = header.substring(0, cut) + ",\"junk\":[[1.5]";
        String after = "]" + header.substring(cut);
        long n = ((6L << 20) - before.length() - after.length()) / 6;
        long length = before.length() + 6 * n + after.length();
        try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(t), 1 << 16)) {
            out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(length).array());
            out.write(before.getBytes(StandardCharsets.UTF_8));
            byte[] u = ",[1.5]".getBytes(StandardCharsets.US_ASCII);
            for (long i = 0; i < n; i++) {
                out.write(u);
            }
            out.write(after.getBytes(StandardCharsets.UTF_8));
            out.write(saved, 8 + headerLength, saved.length - 8 - headerLength);
        }
        refused("unknown field 'junk'");
    }
}
