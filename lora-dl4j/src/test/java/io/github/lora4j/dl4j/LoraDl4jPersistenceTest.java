package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.ops.transforms.Transforms;

/** ModelSerializer round trips and PEFT adapter files of LoRA networks. */
class LoraDl4jPersistenceTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    @TempDir
    Path tmp;

    /** The network {@link #trainedLora()} starts from: LoRA on layer0 and layer2, not trained. */
    private static MultiLayerNetwork untrainedLora() {
        return LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7), CONFIG, "layer0", "layer2");
    }

    private static MultiLayerNetwork trainedLora() {
        MultiLayerNetwork lora = untrainedLora();
        lora.fit(Nets.task(DataType.FLOAT, 5, 6, 64));
        return lora;
    }

    @Test
    void modelSerializerRoundTripsALoraNetworkWithItsUpdaterState() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        File file = tmp.resolve("lora.zip").toFile();
        ModelSerializer.writeModel(lora, file, true);

        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(file, true);

        assertEquals(lora.getLayerWiseConfigurations(), restored.getLayerWiseConfigurations(), "configuration");
        assertInstanceOf(LoraDenseLayerImpl.class, restored.getLayer(0));
        assertBitwise(lora.params(), restored.params(), "parameters");
        assertBitwise(lora.getUpdater().getStateViewArray(), restored.getUpdater().getStateViewArray(), "updater");
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        assertBitwise(lora.output(data.getFeatures()), restored.output(data.getFeatures()), "outputs");
        // Both continue training identically, and W stays frozen in the restored one too.
        INDArray w = restored.getLayer(0).paramTable().get("W").dup();
        lora.fit(data);
        restored.fit(data);
        assertBitwise(lora.params(), restored.params(), "parameters after one more step each");
        assertBitwise(w, restored.getLayer(0).paramTable().get("W"), "restored W after fit");
    }

    @Test
    void aMergedNetworkRestoresMergedAndUnmergesBySubtraction() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        INDArray unmergedOut = lora.output(data.getFeatures());
        INDArray w = lora.getLayer(0).paramTable().get("W").dup();
        LoraDl4j.merge(lora);
        File file = tmp.resolve("merged.zip").toFile();
        ModelSerializer.writeModel(lora, file, false);

        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(file, false);

        assertTrue(LoraDl4j.isMerged(restored), "merged state is saved with the configuration");
        assertBitwise(lora.output(data.getFeatures()), restored.output(data.getFeatures()), "merged outputs");
        LoraDl4j.unmerge(restored);
        assertTrue(w.equalsWithEps(restored.getLayer(0).paramTable().get("W"), 1e-6), "W after unmerge");
        assertTrue(unmergedOut.equalsWithEps(restored.output(data.getFeatures()), 1e-5), "outputs after unmerge");
    }

    @Test
    void computationGraphRoundTripsThroughModelSerializer() throws IOException {
        ComputationGraph lora = LoraDl4j.apply(Nets.graph(DataType.FLOAT, new Adam(0.01), 3), CONFIG, "fc1", "out");
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 64);
        lora.fit(data);
        File file = tmp.resolve("graph.zip").toFile();
        ModelSerializer.writeModel(lora, file, true);

        ComputationGraph restored = ModelSerializer.restoreComputationGraph(file, true);

        assertBitwise(lora.params(), restored.params(), "parameters");
        assertBitwise(lora.getUpdater().getStateViewArray(), restored.getUpdater().getStateViewArray(), "updater");
        assertBitwise(lora.outputSingle(data.getFeatures()), restored.outputSingle(data.getFeatures()), "outputs");
    }

    @Test
    void saveAdapterWritesPeftFilesNamedByLayerAndLoadAdapterRestoresTheOutputs() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        Path dir = tmp.resolve("adapter");
        LoraDl4j.saveAdapter(lora, dir);

        PeftAdapter file = PeftAdapterFiles.read(dir);
        assertEquals(List.of("layer0", "layer2"), file.modules());
        assertEquals(2, file.config().r());
        assertTrue(file.config().fanInFanOut(), "DL4J stores W [nIn, nOut]: fan_in_fan_out");
        assertBitwise(lora.getLayer(0).paramTable().get("loraA"), file.a("layer0"), "lora_A of layer0 [r, nIn]");
        assertBitwise(lora.getLayer(2).paramTable().get("loraB"), file.b("layer2"), "lora_B of layer2 [nOut, r]");

        MultiLayerNetwork fresh = untrainedLora();
        PeftAdapterConfig cfg = LoraDl4j.loadAdapter(fresh, dir);

        assertEquals(4.0, cfg.loraAlpha());
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        assertBitwise(lora.output(data.getFeatures()), fresh.output(data.getFeatures()), "outputs after load");
    }

    @Test
    void loadAdapterRefusesAFileForOtherLayersOrRankAndChangesNothing() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        Path dir = tmp.resolve("adapter");
        LoraDl4j.saveAdapter(lora, dir);

        MultiLayerNetwork otherLayers = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7), CONFIG, "layer1");
        INDArray before = otherLayers.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDl4j.loadAdapter(otherLayers, dir));
        assertTrue(e.getMessage().contains("'layer0'") && e.getMessage().contains("[layer1]"), e.getMessage());
        assertBitwise(before, otherLayers.params(), "parameters after a refused load");

        MultiLayerNetwork otherRank = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7),
                CONFIG.toBuilder().rank(3).build(), "layer0", "layer2");
        INDArray before3 = otherRank.params().dup();
        e = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.loadAdapter(otherRank, dir));
        assertTrue(e.getMessage().contains("expected r 3") && e.getMessage().contains("got r 2"), e.getMessage());
        assertBitwise(before3, otherRank.params(), "parameters after a refused load");
        assertTrue(Files.exists(dir.resolve(PeftAdapterFiles.MODEL_FILE)));
    }

    // ---------------------------------------------------------------- issue 29: loadAdapter as PeftAdapterFiles.load

    /** Rewrites {@code file} with {@code edit} applied to its text (UTF-8). */
    private static void editText(Path file, UnaryOperator<String> edit) throws IOException {
        String before = Files.readString(file);
        String after = edit.apply(before);
        assertNotEquals(before, after, "the edit must change " + file.getFileName());
        Files.writeString(file, after);
    }

    /** {@code lora}'s adapter saved to {@code tmp/name}, its config text rewritten by {@code edit}. */
    private Path savedWithConfig(MultiLayerNetwork lora, String name, UnaryOperator<String> edit) throws IOException {
        Path dir = tmp.resolve(name);
        LoraDl4j.saveAdapter(lora, dir);
        editText(dir.resolve(PeftAdapterFiles.CONFIG_FILE), edit);
        return dir;
    }

    /** Overwrites element {@code index} of F32 tensor {@code key} in a safetensors file with {@code value}. */
    private static void pokeFloat(Path model, String key, int index, float value) throws IOException {
        byte[] bytes = Files.readAllBytes(model);
        ByteBuffer buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        int headerLength = Math.toIntExact(buf.getLong(0));
        String header = new String(bytes, 8, headerLength, StandardCharsets.UTF_8);
        Matcher m = Pattern.compile(Pattern.quote("\"" + key + "\"") + "\\s*:\\s*\\{[^}]*\"data_offsets\"\\s*:\\s*\\[(\\d+)")
                .matcher(header);
        assertTrue(m.find(), "tensor " + key + " in " + header);
        buf.putFloat(8 + headerLength + Integer.parseInt(m.group(1)) + 4 * index, value);
        Files.write(model, bytes);
    }

    /** Issue 29 item 4: NaN and infinity loaded into the network (16 of 2,000 fuzzed files). */
    @Test
    void loadAdapterRefusesNaNAndInfinityAndChangesNothing() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        float[] bad = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY};
        for (int k = 0; k < bad.length; k++) {
            Path dir = tmp.resolve("bad" + k);
            LoraDl4j.saveAdapter(lora, dir);
            pokeFloat(dir.resolve(PeftAdapterFiles.MODEL_FILE), "base_model.model.layer2.lora_B.weight", k, bad[k]);
            MultiLayerNetwork fresh = untrainedLora();
            INDArray before = fresh.params().dup();
            AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> LoraDl4j.loadAdapter(fresh, dir));
            assertTrue(e.getMessage().contains("module 'layer2' lora_B") && e.getMessage().contains("NaN or infinity"),
                    e.getMessage());
            assertBitwise(before, fresh.params(), "parameters after a refused load of " + bad[k]);
        }
    }

    /** Issue 29 item 4: alpha_pattern was ignored, so a layer computed with the global alpha. */
    @Test
    void loadAdapterGivesEachLayerItsAlphaFromAlphaPattern() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        Path dir = savedWithConfig(lora, "pattern",
                t -> t.replaceFirst("\"alpha_pattern\"\\s*:\\s*\\{\\s*\\}", "\"alpha_pattern\":{\"layer0\":16}"));
        MultiLayerNetwork fresh = untrainedLora();

        PeftAdapterConfig cfg = LoraDl4j.loadAdapter(fresh, dir);

        assertEquals(Map.of("layer0", 16.0), cfg.alphaPattern());
        assertEquals(16.0, ((LoraLayerConf) fresh.getLayer(0).conf().getLayer()).lora().getAlpha(), "layer0's alpha");
        assertEquals(4.0, ((LoraLayerConf) fresh.getLayer(2).conf().getLayer()).lora().getAlpha(), "layer2's alpha");
        // layer0 by the formula: tanh(x W + b + (16 / 2)·(x Aᵀ) Bᵀ), in double
        INDArray x = Nets.task(DataType.FLOAT, 5, 7, 16).getFeatures();
        Map<String, INDArray> p = fresh.getLayer(0).paramTable();
        INDArray xd = x.castTo(DataType.DOUBLE);
        INDArray z = xd.mmul(p.get("W").castTo(DataType.DOUBLE)).addiRowVector(p.get("b").castTo(DataType.DOUBLE))
                .addi(xd.mmul(p.get("loraA").castTo(DataType.DOUBLE).transpose())
                        .mmul(p.get("loraB").castTo(DataType.DOUBLE).transpose()).muli(8.0));
        INDArray expected = Transforms.tanh(z);
        INDArray actual = fresh.feedForwardToLayer(0, x).get(1).castTo(DataType.DOUBLE);
        assertTrue(expected.equalsWithEps(actual, 1e-5), "layer0 computes with s = 16 / 2");
        // the alpha is the network's configuration now, saved with it
        File zip = tmp.resolve("pattern.zip").toFile();
        ModelSerializer.writeModel(fresh, zip, false);
        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(zip, false);
        assertBitwise(fresh.output(x), restored.output(x), "outputs after a ModelSerializer round trip");
        // a pattern whose scaling overflows FLOAT is refused by module, nothing changed
        Path huge = savedWithConfig(lora, "huge",
                t -> t.replaceFirst("\"alpha_pattern\"\\s*:\\s*\\{\\s*\\}", "\"alpha_pattern\":{\"layer2\":1e39}"));
        INDArray before = fresh.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.loadAdapter(fresh, huge));
        assertTrue(e.getMessage().contains("module 'layer2'") && e.getMessage().contains("not finite"), e.getMessage());
        assertBitwise(before, fresh.params(), "parameters after a refused load");
        assertEquals(16.0, ((LoraLayerConf) fresh.getLayer(0).conf().getLayer()).lora().getAlpha(), "settings kept");
    }

    /** Issue 29 item 4: modules_to_save was ignored; lora-dl4j replaces no layer, so it refuses the file by name. */
    @Test
    void loadAdapterRefusesModulesToSaveByNameAndChangesNothing() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        Path dir = savedWithConfig(lora, "mts",
                t -> t.replaceFirst("\"modules_to_save\"\\s*:\\s*null", "\"modules_to_save\":[\"classifier\"]"));
        MultiLayerNetwork fresh = untrainedLora();
        INDArray before = fresh.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.loadAdapter(fresh, dir));
        assertTrue(e.getMessage().contains("modules_to_save [classifier]") && e.getMessage().contains("replaces no layer"),
                e.getMessage());
        assertBitwise(before, fresh.params(), "parameters after a refused load");
    }

    /** Issue 29 item 19: an alpha of 1e39 edited into a ModelSerializer zip restored, then output NaN. */
    @Test
    void aRestoredNetworkWhoseAlphaOverflowsItsDataTypeIsRefused() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        File file = tmp.resolve("lora.zip").toFile();
        ModelSerializer.writeModel(lora, file, true);
        File edited = tmp.resolve("edited.zip").toFile();
        try (ZipFile in = new ZipFile(file); ZipOutputStream out = new ZipOutputStream(new FileOutputStream(edited))) {
            for (ZipEntry entry : java.util.Collections.list(in.entries())) {
                byte[] data = in.getInputStream(entry).readAllBytes();
                if (entry.getName().equals("configuration.json")) {
                    String json = new String(data, StandardCharsets.UTF_8);
                    String hot = json.replaceFirst("\"alpha\"\\s*:\\s*4\\.0", "\"alpha\" : 1e39");
                    assertNotEquals(json, hot, "the configuration holds the alpha");
                    data = hot.getBytes(StandardCharsets.UTF_8);
                }
                out.putNextEntry(new ZipEntry(entry.getName()));
                out.write(data);
                out.closeEntry();
            }
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ModelSerializer.restoreMultiLayerNetwork(edited, true));
        assertTrue(e.getMessage().contains("LoRA layer 'layer0' (index 0)") && e.getMessage().contains("1.0E39")
                && e.getMessage().contains("FLOAT"), e.getMessage());
        // apply refuses such a config for a FLOAT network, too
        IllegalArgumentException a = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.apply(
                Nets.mln(DataType.FLOAT, new Adam(0.01), 7), CONFIG.toBuilder().alpha(1e39).build(), "layer0"));
        assertTrue(a.getMessage().contains("not finite") || a.getMessage().contains("finite in FLOAT"), a.getMessage());
    }
}
