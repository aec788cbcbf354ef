package io.github.lora4j.io;

import static io.github.lora4j.io.IoTestData.Q;
import static io.github.lora4j.io.IoTestData.V;
import static io.github.lora4j.TestData.assertBitwiseEquals;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.lora4j.LoraLinear;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The PEFT-format adapters in {@code src/test/resources/oracle/} (copied from {@code shared/oracle}), written
 * from the safetensors spec independently of lora4j: two modules ({@code q_proj} {@code [12, 8]}, {@code v_proj}
 * {@code [6, 8]}), rank 4, and an {@code expected.json} with the same tensors as nested lists.
 */
class OracleAdapterFilesTest {

    @TempDir
    Path tmp;

    private static Path oracle(String name) throws URISyntaxException {
        return Path.of(OracleAdapterFilesTest.class.getResource("/oracle/" + name).toURI());
    }

    /** expected.json's nested list as a FLOAT matrix: each double rounded to float (exact for F32 and BF16 data). */
    static INDArray matrix(JsonNode rows) {
        float[][] m = new float[rows.size()][];
        for (int i = 0; i < m.length; i++) {
            m[i] = new float[rows.get(i).size()];
            for (int j = 0; j < m[i].length; j++) {
                m[i][j] = (float) rows.get(i).get(j).doubleValue();
            }
        }
        return Nd4j.createFromArray(m);
    }

    @ParameterizedTest
    @ValueSource(strings = {"peft-adapter-f32", "peft-adapter-bf16"})
    void readsTheIndependentlyWrittenAdapterExactly(String name) throws Exception {
        Path dir = oracle(name);
        JsonNode expected = new ObjectMapper().readTree(dir.resolve("expected.json").toFile());
        PeftAdapter adapter = PeftAdapterFiles.read(dir);

        PeftAdapterConfig c = adapter.config();
        assertEquals("LORA", c.peftType());
        assertEquals(expected.get("rank").intValue(), c.r());
        assertEquals(expected.get("alpha").doubleValue(), c.loraAlpha());
        assertEquals(0.05, c.loraDropout());
        assertEquals(List.of("q_proj", "v_proj"), c.targetModules());
        assertEquals(Optional.empty(), c.targetModulesRegex());
        assertFalse(c.useRslora());
        assertFalse(c.fanInFanOut());
        assertEquals("none", c.bias());
        assertEquals(Map.of("format", "pt"), adapter.metadata());

        assertEquals(List.of(Q, V), adapter.modules());
        for (String module : adapter.modules()) {
            JsonNode m = expected.get("modules").get(module);
            assertBitwiseEquals(matrix(m.get("A")), adapter.a(module), name + " " + module + " A");
            assertBitwiseEquals(matrix(m.get("B")), adapter.b(module), name + " " + module + " B");
        }
        assertArrayEquals(new long[] {4, 8}, adapter.a(Q).shape());
        assertArrayEquals(new long[] {12, 4}, adapter.b(Q).shape());
        assertArrayEquals(new long[] {4, 8}, adapter.a(V).shape());
        assertArrayEquals(new long[] {6, 4}, adapter.b(V).shape());
    }

    @ParameterizedTest
    @ValueSource(strings = {"peft-adapter-f32", "peft-adapter-bf16"})
    void loadsIntoAModelAndComputesTheLoraFormula(String name) throws Exception {
        Map<String, LoraLinear> model = IoTestData.bareModel(DataType.FLOAT);
        PeftAdapterConfig c = PeftAdapterFiles.load(oracle(name), model, "oracle");
        PeftAdapter adapter = PeftAdapterFiles.read(oracle(name));
        assertEquals(c, adapter.config());
        for (String module : List.of(Q, V)) {
            LoraLinear layer = model.get(module);
            assertBitwiseEquals(adapter.a(module), layer.loraA("oracle"), module + " A");
            assertBitwiseEquals(adapter.b(module), layer.loraB("oracle"), module + " B");
            assertEquals(2.0, layer.adapter("oracle").scaling()); // alpha 8 / r 4
            assertEquals(null, layer.activeAdapter()); // loading does not activate
            layer.setActiveAdapter("oracle");
            INDArray x = io.github.lora4j.TestData.gaussian(DataType.DOUBLE, 5, 1.0, 3, 8);
            INDArray w = layer.weight().castTo(DataType.DOUBLE);
            INDArray a = adapter.a(module).castTo(DataType.DOUBLE);
            INDArray b = adapter.b(module).castTo(DataType.DOUBLE);
            INDArray expected = x.mmul(w.transpose()).add(x.mmul(a.transpose()).mmul(b.transpose()).mul(2.0));
            INDArray actual = layer.forward(x.castTo(DataType.FLOAT)).castTo(DataType.DOUBLE);
            double err = expected.sub(actual).norm2Number().doubleValue() / expected.norm2Number().doubleValue();
            assertTrue(err < 1e-6, module + ": relative error " + err);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"F32", "BF16"})
    void resavingTheOracleReproducesItsTensorBytes(String dtype) throws Exception {
        Path dir = oracle(dtype.equals("F32") ? "peft-adapter-f32" : "peft-adapter-bf16");
        Map<String, LoraLinear> model = IoTestData.bareModel(DataType.FLOAT);
        PeftAdapterFiles.load(dir, model, "default");
        PeftAdapterFiles.saver().linears(model).fileType(dtype.equals("F32") ? DataType.FLOAT : DataType.BFLOAT16)
                .baseModelNameOrPath(PeftAdapterFiles.read(dir).config().baseModelNameOrPath().orElseThrow())
                .taskType(PeftAdapterFiles.read(dir).config().taskType().orElseThrow())    // CAUSAL_LM
                .save(tmp, "default");
        // The oracle orders tensors as we do (sorted names), so the data sections must match byte for byte.
        assertArrayEquals(dataSection(dir.resolve(PeftAdapterFiles.MODEL_FILE)),
                dataSection(tmp.resolve(PeftAdapterFiles.MODEL_FILE)));
        assertEquals(PeftAdapterFiles.read(dir).config(), PeftAdapterFiles.read(tmp).config());
    }

    private static byte[] dataSection(Path file) throws IOException {
        byte[] all = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        return Arrays.copyOfRange(all, (int) (8 + n), all.length);
    }
}
