package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Issue 29, items 7 and 9: safetensors headers under the 32 MiB cap that are large JSON trees. Before the fix the
 * header of many short metadata keys went through {@code Map.copyOf}, which degrades to quadratic time (1 MiB: 3 s,
 * 3 MiB: 29 s, 32 MiB: out of memory here), and every entry became a JSON tree, so a 32 MiB array in the metadata or a
 * junk field in a tensor entry ran out of a 256 MiB heap (a junk field in a small header was even accepted).
 *
 * <p>Runs in the {@code -Xmx256m} execution (the class name holds "HostileFile", see lora-core/pom.xml), each test
 * with a timeout on a separate thread, at the attacks' real sizes. The files are streamed to disk so the test itself
 * never holds a header as one string.
 */
@Timeout(value = 20, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class HeaderBombHostileFileTest {

    private static final String CONFIG = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"m\"]}";
    private static final String TENSORS = "\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],"
            + "\"data_offsets\":[0,32]},\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],"
            + "\"data_offsets\":[32,64]}";

    @TempDir
    Path tmp;

    private Path dirWithHeader(String name, long headerBytes, String prefix, java.util.function.IntFunction<String> unit,
                               String suffix) throws IOException {
        Path dir = tmp.resolve(name);
        Files.createDirectories(dir);
        Files.writeString(dir.resolve(PeftAdapterFiles.CONFIG_FILE), CONFIG);
        IoTestData.writeBigHeader(dir.resolve(PeftAdapterFiles.MODEL_FILE), headerBytes, prefix, unit, suffix,
                new byte[64]);
        return dir;
    }

    private static AdapterFormatException refused(Path dir, String... fragments) {
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message should contain '" + f + "': " + e.getMessage());
        }
        assertTrue(e.getMessage().length() < 1000, "a short message, got " + e.getMessage().length() + " characters");
        return e;
    }

    @ParameterizedTest(name = "{0} MiB")
    @ValueSource(ints = {1, 3, 32})
    void manyShortMetadataKeysAreRefusedAtTheEntryCapInBoundedTimeAndMemory(int mib) throws IOException {
        // 1 MiB holds about 110,000 keys, 32 MiB about 3.4 million: each "k<base36>":"".
        Path dir = dirWithHeader("keys" + mib, (long) mib << 20, "{\"__metadata__\":{\"0\":\"\"",
                i -> ",\"" + Integer.toString(i + 1, 36) + "\":\"\"", "}," + TENSORS + "}");
        refused(dir, "__metadata__ holds more than " + Safetensors.MAX_METADATA_ENTRIES + " entries");
    }

    @Test
    void metadataUpToTheCapIsReadInFileOrder() throws IOException {
        int n = Safetensors.MAX_METADATA_ENTRIES;
        StringBuilder h = new StringBuilder("{\"__metadata__\":{");
        List<String> keys = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            // Keys in an order no hash map keeps: descending, with a long value each.
            String k = "key" + (n - i);
            keys.add(k);
            h.append(i == 0 ? "" : ",").append('"').append(k).append("\":\"").append("v".repeat(50)).append('"');
        }
        h.append("},").append(TENSORS).append('}');
        Path dir = IoTestData.writeDir(tmp.resolve("cap"), CONFIG, IoTestData.file(h.toString(), new byte[64]));
        Map<String, String> metadata = PeftAdapterFiles.read(dir).metadata();
        assertEquals(keys, new ArrayList<>(metadata.keySet()), "metadata in file order");
    }

    @Test
    void aMetadataArrayIsRefusedAtItsFirstToken() throws IOException {
        // 32 MiB of one-element arrays of a double: as a JSON tree about 15 million nodes, far beyond 256 MiB.
        Path dir = dirWithHeader("array", 32L << 20, "{\"__metadata__\":{\"a\":[[1.5]", i -> ",[1.5]",
                "]}," + TENSORS + "}");
        refused(dir, "expected __metadata__['a'] to be a string, got ARRAY");
    }

    @Test
    void aJunkFieldInATensorEntryIsRefusedAsItComes() throws IOException {
        Path dir = dirWithHeader("junk", 32L << 20, "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[2,4],\"data_offsets\":[0,32],\"junk\":[[1.5]", i -> ",[1.5]",
                "]},\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[32,64]}}");
        refused(dir, "tensor 'base_model.model.m.lora_A.weight': unknown field 'junk'; expected only dtype, shape and "
                + "data_offsets");
    }

    @Test
    void aSmallJunkFieldIsRefusedToo() throws IOException {
        String header = "{" + TENSORS.replace("\"shape\":[4,2]", "\"shape\":[4,2],\"junk\":1") + "}";
        Path dir = IoTestData.writeDir(tmp.resolve("small-junk"), CONFIG, IoTestData.file(header, new byte[64]));
        refused(dir, "tensor 'base_model.model.m.lora_B.weight': unknown field 'junk'");
    }

    @Test
    void aShapeWithMillionsOfDimensionsIsRefusedAtTheDimensionCap() throws IOException {
        Path dir = dirWithHeader("dims", 32L << 20, "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\","
                + "\"data_offsets\":[0,32],\"shape\":[1", i -> ",1", "]}}");
        refused(dir, "expected shape to have at most " + Safetensors.MAX_DIMS + " entries, got "
                + (Safetensors.MAX_DIMS + 1) + " or more");
    }

    @Test
    void aNumberOfAMillionDigitsIsRefusedWithoutParsingIt() throws IOException {
        Path dir = dirWithHeader("digits", 1L << 20, "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[2,4],\"data_offsets\":[0,9", i -> "99999999", "]}}");
        refused(dir, "header exceeds a limit of this reader", "Number value length");
    }

    @Test
    void aMetadataStringBeyondTheStringCapIsRefused() throws IOException {
        Path dir = dirWithHeader("string", 32L << 20, "{\"__metadata__\":{\"a\":\"", i -> "xxxxxxxx",
                "\"}," + TENSORS + "}");
        refused(dir, "header exceeds a limit of this reader", "String value length");
    }

    @Test
    void aMetadataStringJustBelowTheStringCapIsRead() throws IOException {
        int chars = Safetensors.MAX_STRING_CHARS - 8;
        String prefix = "{\"__metadata__\":{\"a\":\"";
        String suffix = "\"}," + TENSORS + "}";
        Path dir = dirWithHeader("long-string", (long) prefix.length() + chars + suffix.length(), prefix,
                i -> "xxxxxxxx", suffix);
        assertEquals(chars, PeftAdapterFiles.read(dir).metadata().get("a").length());
    }

    @Test
    void deepNestingInTheMetadataIsRefusedAtItsFirstBracket() throws IOException {
        Path dir = dirWithHeader("nest", 32L << 20, "{\"__metadata__\":{\"a\":", i -> "[[[[[[[[", "");
        refused(dir, "expected __metadata__['a'] to be a string, got ARRAY");
    }
}
