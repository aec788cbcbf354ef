package io.github.lora4j.io;

import static io.github.lora4j.io.IoTestData.Q;
import static io.github.lora4j.io.IoTestData.V;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.io.IoTestData.concat;
import static io.github.lora4j.io.IoTestData.f32;
import static io.github.lora4j.io.IoTestData.file;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Every kind of bad file gets an {@link AdapterFormatException} (a bad fit with the model an
 * {@link IllegalArgumentException}) whose message names expected and actual, and changes nothing: no model, no
 * existing file.
 */
class CorruptAdapterFilesTest {

    @TempDir
    Path tmp;

    /** A valid rank-1 module "m" with in = 4, out = 2, F32: A at [0, 16), B at [16, 24). */
    private static final String A_ENTRY = "\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[1,4],"
            + "\"data_offsets\":[0,16]}";
    private static final String B_ENTRY = "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,1],"
            + "\"data_offsets\":[16,24]}";
    private static final byte[] DATA = f32(1, 2, 3, 4, 5, 6);

    private int dirs;

    private AdapterFormatException readFails(String config, byte[] model, String... fragments) {
        Path dir = tmp.resolve("case" + dirs++);
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> PeftAdapterFiles.read(IoTestData.writeDir(dir, config, model)));
        assertMessage(e, fragments);
        return e;
    }

    private AdapterFormatException headerFails(String header, byte[] data, String... fragments) {
        return readFails(IoTestData.configJson(1), file(header, data), fragments);
    }

    private static void assertMessage(Exception e, String... fragments) {
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message should contain '" + f + "': " + e.getMessage());
        }
    }

    @Test
    void validBaselineReads() throws IOException {
        // The fixtures below break this file one rule at a time.
        PeftAdapter a = PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve("ok"), IoTestData.configJson(1),
                file("{" + A_ENTRY + "," + B_ENTRY + "}", DATA)));
        assertEquals(List.of("m"), a.modules());
    }

    // ---------------------------------------------------------------- safetensors framing

    @Test
    void fileShorterThanTheLengthField() {
        readFails(IoTestData.configJson(1), new byte[5], "expected at least 8 bytes", "got a file of 5 bytes");
    }

    @Test
    void headerLengthBeyondTheFile() {
        byte[] f = file("{" + A_ENTRY + "," + B_ENTRY + "}", DATA);
        ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 10_000);
        readFails(IoTestData.configJson(1), f, "header length 10000 exceeds the " + (f.length - 8) + " bytes");
    }

    @Test
    void headerLengthWithTheTopBitSetIsReadAsUnsigned() {
        byte[] f = file("{}", new byte[0]);
        ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).putLong(0, -1L);
        readFails(IoTestData.configJson(1), f, "header length 18446744073709551615 exceeds");
    }

    @Test
    void headerLengthAboveTheCapIsRefusedBeforeAllocating() throws IOException {
        // A sparse file of 100 MB + 16 bytes that really is long enough for its declared 100 MB + 1 header.
        Path dir = tmp.resolve("huge");
        Files.createDirectories(dir);
        Files.writeString(dir.resolve(PeftAdapterFiles.CONFIG_FILE), IoTestData.configJson(1));
        try (FileChannel ch = FileChannel.open(dir.resolve(PeftAdapterFiles.MODEL_FILE), StandardOpenOption.CREATE_NEW,
                StandardOpenOption.WRITE, StandardOpenOption.SPARSE)) {
            ch.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 100_000_001L));
            ch.write(ByteBuffer.wrap(new byte[] {' '}), 100_000_015L);
        }
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
        assertMessage(e, "header length 100000001 exceeds the limit of " + Safetensors.MAX_HEADER_BYTES + " bytes");
    }

    @Test
    void headerThatIsNotJson() {
        headerFails("{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 2", new byte[0], "header is not valid JSON");
    }

    @Test
    void headerThatIsNotUtf8() {
        byte[] f = file("{\"xx\":1}", new byte[0]);
        f[10] = (byte) 0xFF;
        f[11] = (byte) 0xFE;
        readFails(IoTestData.configJson(1), f, "not valid UTF-8");
    }

    @Test
    void headerThatIsNotAnObject() {
        headerFails("[1, 2]", new byte[0], "expected the header to be a JSON object, got ARRAY");
    }

    @Test
    void duplicateTensorNames() {
        headerFails("{" + A_ENTRY + "," + A_ENTRY + "," + B_ENTRY + "}", DATA, "not valid JSON",
                "Duplicate field 'base_model.model.m.lora_A.weight'");
    }

    @Test
    void unknownDtype() {
        headerFails("{" + A_ENTRY.replace("F32", "I64") + "," + B_ENTRY + "}", DATA,
                "unsupported dtype 'I64', expected one of [F16, BF16, F32, F64]");
    }

    @Test
    void shapeWhoseSizeOverflows() {
        headerFails("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,24]}}", DATA,
                "shape [4294967296, 4294967296] has more elements than a 64-bit size can hold");
    }

    @Test
    void shapeThatDisagreesWithTheOffsets() {
        headerFails("{" + A_ENTRY.replace("[1,4]", "[2,4]") + "," + B_ENTRY + "}", DATA,
                "shape [2, 4] of F32 needs 32 bytes, but data_offsets [0, 16] hold 16");
    }

    @Test
    void negativeDimension() {
        headerFails("{" + A_ENTRY.replace("[1,4]", "[-1,4]") + "," + B_ENTRY + "}", DATA,
                "expected shape[0] to be a non-negative 64-bit integer, got -1");
    }

    @Test
    void fractionalOrHugeNumbers() {
        headerFails("{" + A_ENTRY.replace("[1,4]", "[1.0,4]") + "," + B_ENTRY + "}", DATA,
                "expected shape[0] to be a non-negative 64-bit integer, got 1.0");
        headerFails("{" + A_ENTRY.replace("[0,16]", "[0,99999999999999999999999]") + "," + B_ENTRY + "}", DATA,
                "expected data_offsets[1] to be a non-negative 64-bit integer");
    }

    @Test
    void overlappingOffsets() {
        String b = B_ENTRY.replace("[16,24]", "[8,16]");
        headerFails("{" + A_ENTRY + "," + b + "}", f32(1, 2, 3, 4), "overlaps the previous tensor",
                "expected data_offsets to begin at 16, got [8, 16]");
    }

    @Test
    void holeBetweenTensors() {
        String b = B_ENTRY.replace("[16,24]", "[20,28]");
        headerFails("{" + A_ENTRY + "," + b + "}", f32(1, 2, 3, 4, 5, 6, 7), "leaves a hole before it",
                "expected data_offsets to begin at 16, got [20, 28]");
    }

    @Test
    void offsetsBeyondTheData() {
        headerFails("{" + A_ENTRY + "," + B_ENTRY + "}", f32(1, 2, 3, 4, 5),
                "tensors cover 24 bytes of data, but the file holds 20 bytes after the header");
    }

    @Test
    void trailingBytesNotCoveredByAnyTensor() {
        headerFails("{" + A_ENTRY + "," + B_ENTRY + "}", concat(DATA, new byte[4]),
                "tensors cover 24 bytes of data, but the file holds 28 bytes after the header");
    }

    @Test
    void offsetsInTheWrongOrder() {
        headerFails("{" + A_ENTRY.replace("[0,16]", "[16,0]") + "," + B_ENTRY + "}", DATA,
                "data_offsets must satisfy begin <= end, got [16, 0]");
    }

    @Test
    void offsetsWithTheWrongArity() {
        headerFails("{" + A_ENTRY.replace("[0,16]", "[0,16,24]") + "," + B_ENTRY + "}", DATA,
                "expected data_offsets to have 2 entries, got 3");
    }

    @Test
    void metadataThatIsNotStrings() {
        headerFails("{\"__metadata__\":{\"format\":1}," + A_ENTRY + "," + B_ENTRY + "}", DATA,
                "expected __metadata__['format'] to be a string, got NUMBER");
    }

    // ---------------------------------------------------------------- PEFT structure

    @Test
    void moduleWithoutLoraB() {
        headerFails("{" + A_ENTRY + "}", f32(1, 2, 3, 4),
                "module 'm' has base_model.model.m.lora_A.weight but expected also base_model.model.m.lora_B.weight");
    }

    @Test
    void moduleWithoutLoraA() {
        headerFails("{" + B_ENTRY.replace("[16,24]", "[0,8]") + "}", f32(1, 2),
                "module 'm' has base_model.model.m.lora_B.weight but expected also base_model.model.m.lora_A.weight");
    }

    @Test
    void rankThatDisagreesWithTheConfig() {
        readFails(IoTestData.configJson(2), file("{" + A_ENTRY + "," + B_ENTRY + "}", DATA),
                "expected rank r = 2 from adapter_config.json (shape [2, in]), got shape [1, 4]");
    }

    @Test
    void loraAAndLoraBOfDifferentRanks() {
        // A has rank 1 as the config says, B rank 2: B is named.
        String b = "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[16,24]}";
        headerFails("{" + A_ENTRY + "," + b + "}", DATA, "tensor 'base_model.model.m.lora_B.weight'",
                "expected rank r = 1", "got shape [1, 2]");
    }

    @Test
    void tensorThatIsNotAMatrix() {
        headerFails("{" + A_ENTRY.replace("[1,4]", "[4]") + "," + B_ENTRY + "}", DATA,
                "expected a non-empty matrix [r, in], got shape [4]");
    }

    @Test
    void keysOfNoKnownRoleAreRefusedNamingTheKey() {
        Map<String, String> keys = Map.of(
                "base_model.model.m.lora_A.default.weight", "holds the role name 'lora_A'",
                "base_model.model.x.lora_magnitude_vector.default.weight", "holds the role name 'lora_magnitude_vector'",
                "model.m.lora_A.weight", "it does not start with base_model.model.",
                "base_model.model.x.running_mean", "its role is none of",
                "base_model.model..lora_A.weight", "its module path is empty",
                "base_model.model.a..b.weight", "has an empty segment");
        keys.forEach((key, why) -> {
            String header = "{" + A_ENTRY + "," + B_ENTRY + ",\"" + key
                    + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]}}";
            headerFails(header, concat(DATA, f32(9)), "unsupported tensor '" + key + "'", why);
        });
    }

    @Test
    void emptyFile() {
        headerFails("{\"__metadata__\":{}}", new byte[0], "found no tensors");
    }

    // ---------------------------------------------------------------- adapter_config.json

    private void configFails(String config, String... fragments) {
        readFails(config, file("{" + A_ENTRY + "," + B_ENTRY + "}", DATA), fragments);
    }

    @Test
    void configOfAnotherPeftType() {
        configFails("{\"peft_type\": \"LOHA\", \"r\": 1}", "expected peft_type \"LORA\", got \"LOHA\"");
        configFails("{\"r\": 1}", "expected peft_type \"LORA\", got none");
    }

    @Test
    void configThatIsNotJsonOrHasDuplicateKeys() {
        configFails("{\"peft_type\": \"LORA\", \"r\": ", "adapter_config.json: not valid JSON");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"r\": 2}", "Duplicate field 'r'");
    }

    @Test
    void configValuesOfTheWrongTypeOrRange() {
        configFails("{\"peft_type\": \"LORA\", \"r\": 0}", "expected r to be an integer >= 1, got 0");
        configFails("{\"peft_type\": \"LORA\", \"r\": \"1\"}", "expected r to be an integer >= 1, got \"1\"");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"lora_alpha\": -1}", "expected lora_alpha finite and > 0, got -1.0");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"lora_dropout\": 1.5}", "expected lora_dropout in [0, 1), got 1.5");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"use_rslora\": \"yes\"}", "expected use_rslora to be true or false");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"target_modules\": 3}", "expected target_modules to be a list");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"bias\": \"some\"}", "expected bias to be one of");
    }

    @Test
    void configFeaturesThatWouldChangeTheMathAreRefusedNamingTheKey() {
        for (String dora : List.of("\"true\"", "1", "\"false\"", "[1]")) {
            configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"use_dora\": " + dora + "}",
                    "expected use_dora to be true, false or null", "got " + dora.replace(" ", ""));
        }
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"lora_bias\": true}", "lora_bias is not supported");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"alora_invocation_tokens\": [5, 7]}",
                "alora_invocation_tokens is not supported");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"layer_replication\": [[0, 2]]}",
                "layer_replication is not supported");
        for (String init : List.of("\"pissa\"", "\"pissa_niter_16\"", "\"olora\"", "\"corda\"", "\"loftq\"", "\"eva\"", "1")) {
            configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"init_lora_weights\": " + init + "}",
                    "init_lora_weights " + init + " is not supported");
        }
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"rank_pattern\": {\"m\": 4}}",
                "expected rank r = 4 from r and rank_pattern of adapter_config.json");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"rank_pattern\": {\"(\": 4}}",
                "rank_pattern key '(' is not a valid regular expression");
        configFails("{\"peft_type\": \"LORA\", \"r\": 1, \"alpha_pattern\": {\"m\": -1}}",
                "expected alpha_pattern['m'] finite and > 0, got -1.0");
    }

    @Test
    void falsyAndPlainSettingsAreAccepted() throws IOException {
        for (String ok : List.of("\"use_dora\": false", "\"use_dora\": 0", "\"use_dora\": null", "\"lora_bias\": false",
                "\"alora_invocation_tokens\": null", "\"layer_replication\": null", "\"init_lora_weights\": \"gaussian\"",
                "\"init_lora_weights\": false", "\"auto_mapping\": {\"base_model_class\": \"X\"}",
                "\"base_model_name_or_path\": null")) {
            PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve("ok" + ok.hashCode()),
                    "{\"peft_type\": \"LORA\", \"r\": 1, " + ok + "}", file("{" + A_ENTRY + "," + B_ENTRY + "}", DATA)));
        }
    }

    @Test
    void unknownConfigKeysAreIgnoredAndARegexTargetIsKept() throws IOException {
        String config = "{\"peft_type\": \"LORA\", \"r\": 1, \"target_modules\": \".*proj\", \"rank_pattern\": {},"
                + " \"use_dora\": false, \"future\": {\"nested\": [1, 2]}, \"layers_to_transform\": null}";
        PeftAdapterConfig c = PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve("regex"), config,
                file("{" + A_ENTRY + "," + B_ENTRY + "}", DATA))).config();
        assertEquals(Optional.of(".*proj"), c.targetModulesRegex());
        assertEquals(List.of(), c.targetModules());
        assertEquals(8.0, c.loraAlpha()); // PEFT's default when absent
        assertTrue(new String(c.toJson(), java.nio.charset.StandardCharsets.UTF_8)
                .contains("\"target_modules\" : \".*proj\""));
    }

    @Test
    void missingFilesAreReportedAsSuch() throws IOException {
        Path dir = tmp.resolve("empty");
        Files.createDirectories(dir);
        assertThrows(NoSuchFileException.class, () -> PeftAdapterFiles.read(dir));
    }

    // ---------------------------------------------------------------- load leaves the model unchanged

    /** Everything observable about a model: adapters, active adapter, A, B and W bits. */
    private static List<Object> snapshot(Map<String, LoraLinear> model) {
        List<Object> s = new ArrayList<>();
        for (Map.Entry<String, LoraLinear> m : model.entrySet()) {
            LoraLinear l = m.getValue();
            s.add(m.getKey());
            s.add(l.adapterNames());
            s.add(String.valueOf(l.activeAdapter()));
            s.add(java.util.Arrays.toString(bits(l.weight())));
            for (String n : l.adapterNames()) {
                s.add(java.util.Arrays.toString(bits(l.loraA(n))));
                s.add(java.util.Arrays.toString(bits(l.loraB(n))));
            }
        }
        return s;
    }

    private Path savedModel() throws IOException {
        Path dir = tmp.resolve("saved");
        PeftAdapterFiles.save(dir, IoTestData.model(DataType.FLOAT, 7), "default");
        return dir;
    }

    private static <T extends Throwable> T loadFails(Class<T> type, Map<String, LoraLinear> model, Executable load,
                                                      String... fragments) {
        List<Object> before = snapshot(model);
        T e = assertThrows(type, load);
        assertMessage((Exception) e, fragments);
        assertEquals(before, snapshot(model), "a failed load must leave the model as it was");
        return e;
    }

    @Test
    void loadIntoAModelMissingAModuleChangesNothing() throws IOException {
        Path dir = savedModel();
        Map<String, LoraLinear> model = IoTestData.bareModel(DataType.FLOAT);
        PeftAdapterFiles.load(dir, model, "first"); // a previously loaded adapter that must survive
        model.remove(V);
        loadFails(IllegalArgumentException.class, model, () -> PeftAdapterFiles.load(dir, model, "second"),
                "module '" + V + "' of the adapter file is not in the model", "expected one of [" + Q + "]");
    }

    @Test
    void loadIntoLayersOfAnotherShapeChangesNothing() throws IOException {
        Path dir = savedModel();
        Map<String, LoraLinear> model = IoTestData.bareModel(DataType.FLOAT);
        model.put(V, LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 6, 9), null, WeightLayout.OUT_IN));
        loadFails(IllegalArgumentException.class, model, () -> PeftAdapterFiles.load(dir, model, "x"),
                "module '" + V + "': the layer has in = 9, out = 6", "expected A [4, 9] and B [6, 4]",
                "got A [4, 8] and B [6, 4]");
    }

    @Test
    void loadUnderATakenNameChangesNothingEvenWhenOnlyTheLastModuleHasIt() throws IOException {
        Path dir = savedModel();
        Map<String, LoraLinear> model = IoTestData.bareModel(DataType.FLOAT);
        model.get(V).addAdapter("x", LoraConfig.builder().rank(2).build());
        loadFails(IllegalArgumentException.class, model, () -> PeftAdapterFiles.load(dir, model, "x"),
                "module '" + V + "': expected adapter name 'x' to be free", "already has adapters [x]");
    }

    @Test
    void loadThatFailsWhileAddingRollsBackTheModulesAlreadyDone() throws IOException {
        // The same layer under both module names passes every check (the name is free on each), but the
        // second add fails: the first must be undone.
        Path dir = savedModel();
        LoraLinear shared = LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 12, 8), null, WeightLayout.OUT_IN);
        Path other = tmp.resolve("same-shapes");
        Map<String, LoraLinear> src = new LinkedHashMap<>();
        src.put(Q, IoTestData.layer(DataType.FLOAT, 3, 8, 12, LoraConfig.builder().rank(4).build(), WeightLayout.OUT_IN));
        src.put(V, IoTestData.layer(DataType.FLOAT, 4, 8, 12, LoraConfig.builder().rank(4).build(), WeightLayout.OUT_IN));
        PeftAdapterFiles.save(other, src, "default");
        Map<String, LoraLinear> model = new LinkedHashMap<>();
        model.put(Q, shared);
        model.put(V, shared);
        loadFails(IllegalArgumentException.class, model, () -> PeftAdapterFiles.load(other, model, "x"),
                "adapter 'x' already exists");
        assertEquals(List.of(), shared.adapterNames());
        assertTrue(Files.exists(dir));
    }

    @Test
    void loadOfACorruptFileLeavesAPreviouslyLoadedModelUnchanged() throws IOException {
        Path good = savedModel();
        Map<String, LoraLinear> model = IoTestData.bareModel(DataType.FLOAT);
        PeftAdapterFiles.load(good, model, "first");
        model.values().forEach(l -> l.setActiveAdapter("first"));
        Path bad = tmp.resolve("bad");
        Files.createDirectories(bad);
        Files.copy(good.resolve(PeftAdapterFiles.CONFIG_FILE), bad.resolve(PeftAdapterFiles.CONFIG_FILE));
        byte[] model0 = Files.readAllBytes(good.resolve(PeftAdapterFiles.MODEL_FILE));
        Files.write(bad.resolve(PeftAdapterFiles.MODEL_FILE), java.util.Arrays.copyOf(model0, model0.length - 3));
        var x = io.github.lora4j.TestData.gaussian(DataType.FLOAT, 1, 1, 2, 8);
        var before = model.get(Q).forward(x);
        loadFails(AdapterFormatException.class, model, () -> PeftAdapterFiles.load(bad, model, "second"),
                "but the file holds");
        assertArrayEquals(bits(before), bits(model.get(Q).forward(x)));
    }

    @Test
    void loadOfNonFiniteValuesChangesNothing() throws IOException {
        Map<String, LoraLinear> model = new LinkedHashMap<>();
        model.put("m", LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 2, 4), null, WeightLayout.OUT_IN));
        Path dir = IoTestData.writeDir(tmp.resolve("nan"), IoTestData.configJson(1),
                file("{" + A_ENTRY + "," + B_ENTRY + "}", f32(1, 2, 3, 4, 5, Float.NaN)));
        loadFails(AdapterFormatException.class, model, () -> PeftAdapterFiles.load(dir, model, "x"),
                "module 'm' lora_B: expected finite values, found NaN or infinity");
    }

    @Test
    void loadOfF64ValuesThatOverflowAFloatLayerChangesNothing() throws IOException {
        Map<String, LoraLinear> model = new LinkedHashMap<>();
        model.put("m", LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 2, 4), null, WeightLayout.OUT_IN));
        String header = "{" + A_ENTRY.replace("F32", "F64").replace("[0,16]", "[0,32]") + ","
                + B_ENTRY.replace("F32", "F64").replace("[16,24]", "[32,48]") + "}";
        ByteBuffer d = ByteBuffer.allocate(48).order(ByteOrder.LITTLE_ENDIAN);
        for (double v : new double[] {1, 2, 1e300, 4, 5, 6}) {
            d.putDouble(v);
        }
        Path dir = IoTestData.writeDir(tmp.resolve("f64"), IoTestData.configJson(1), file(header, d.array()));
        loadFails(IllegalArgumentException.class, model, () -> PeftAdapterFiles.load(dir, model, "x"),
                "module 'm' lora_A: a value overflows the layer's FLOAT");
    }

    // ---------------------------------------------------------------- failed saves keep the old files

    @Test
    void saveThatFailsValidationMidwayKeepsTheExistingFiles() throws IOException {
        Path dir = savedModel();
        Map<String, byte[]> before = IoTestData.files(dir);
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 99);
        // The second module (sorted) has another rank: detected after the first was collected.
        model.put(V, IoTestData.layer(DataType.FLOAT, 5, 8, 6, LoraConfig.builder().rank(4).alpha(8).dropout(0.1)
                .build(), WeightLayout.OUT_IN));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.save(dir, model, "default"));
        assertMessage(e, "module '" + V + "' has dropout=0.1", "module '" + Q + "' has dropout=0.0");
        IoTestData.assertSameFiles(before, dir);
    }

    @Test
    void saveThatFailsWhileWritingKeepsTheExistingFilesAndLeavesNoTemporaryFile() throws IOException {
        Path dir = savedModel();
        Map<String, byte[]> before = IoTestData.files(dir);
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 99);
        // 70000 overflows F16 (max 65504): found while encoding, after the temporary file was created.
        model.get(V).setAdapterWeights("default", Nd4j.zeros(DataType.FLOAT, 4, 8),
                Nd4j.zeros(DataType.FLOAT, 6, 4).putScalar(5, 70000f));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.save(dir, model, "default", DataType.FLOAT16));
        assertMessage(e, "value 70000.0 overflows F16");
        IoTestData.assertSameFiles(before, dir);
    }

    @Test
    void saveOverADirectoryKeepsTheOtherFile() throws IOException {
        Path dir = savedModel();
        Files.delete(dir.resolve(PeftAdapterFiles.CONFIG_FILE));
        Files.createDirectories(dir.resolve(PeftAdapterFiles.CONFIG_FILE).resolve("child"));
        byte[] before = Files.readAllBytes(dir.resolve(PeftAdapterFiles.MODEL_FILE));
        IOException e = assertThrows(IOException.class,
                () -> PeftAdapterFiles.save(dir, IoTestData.model(DataType.FLOAT, 99), "default"));
        assertMessage(e, "expected a regular file or nothing");
        assertArrayEquals(before, Files.readAllBytes(dir.resolve(PeftAdapterFiles.MODEL_FILE)));
        try (Stream<Path> s = Files.list(dir)) { // no temporary file left behind
            assertEquals(List.of(SafeFiles.LOCK_FILE, PeftAdapterFiles.CONFIG_FILE, PeftAdapterFiles.MODEL_FILE),
                    s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList()));
        }
    }

    @Test
    void saveArgumentsThatCannotBeWrittenAsPeft() {
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 1);
        assertMessage(assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.save(tmp, model, "default", DataType.INT32)), "got INT");
        assertMessage(assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.save(tmp, model, "nope")), "no module has adapter 'nope'");
        assertFalse(Files.exists(tmp.resolve(PeftAdapterFiles.MODEL_FILE)));
    }

    private static void assertFalse(boolean b) {
        org.junit.jupiter.api.Assertions.assertFalse(b);
    }
}
