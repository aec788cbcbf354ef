package io.github.lora4j.model;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link LoraModel#trainableParametersReport()} against PEFT's definition, recomputed here from the modules' shapes:
 * {@code get_nb_trainable_parameters} walks {@code model.named_parameters()}, adds every {@code numel()} to
 * {@code all_param} and those with {@code requires_grad} to {@code trainable_params}; PEFT's LoRA layers register
 * {@code lora_A.<adapter>.weight} {@code [r, in]} and {@code lora_B.<adapter>.weight} {@code [out, r]} for every
 * adapter (embeddings: {@code lora_embedding_A [r, num]}, {@code lora_embedding_B [dim, r]}), with
 * {@code requires_grad} on the active adapter's only; the base weights and biases are frozen; a
 * {@code ModulesToSaveWrapper} keeps the frozen original and a trainable copy. {@code print_trainable_parameters}
 * prints {@code f"trainable params: {t:,d} || all params: {a:,d} || trainable%: {100 * t / a:.4f}"}.
 */
class ParameterReportTest {

    private static final int D = 8;
    private static final int V = 20;
    private static final int H = 16;

    /** One {@code nn.Parameter} as PEFT sees it. */
    private record Param(String name, long numel, boolean requiresGrad) {
    }

    /** PEFT's line for {@code params}, with Python's formatting rebuilt by hand (no {@code String.format}). */
    private static String peftLine(List<Param> params) {
        long trainable = 0;
        long all = 0;
        for (Param p : params) {
            all += p.numel();
            if (p.requiresGrad()) {
                trainable += p.numel();
            }
        }
        // Python's {:.4f} rounds the exact binary value half to even
        String pct = new BigDecimal(100.0 * trainable / all).setScale(4, RoundingMode.HALF_EVEN).toPlainString();
        return "trainable params: " + commas(trainable) + " || all params: " + commas(all) + " || trainable%: " + pct;
    }

    private static String commas(long n) {
        String digits = Long.toString(n);
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < digits.length(); i++) {
            if (i > 0 && (digits.length() - i) % 3 == 0) {
                out.append(',');
            }
            out.append(digits.charAt(i));
        }
        return out.toString();
    }

    private static void linear(List<Param> ps, String path, long out, long in, boolean bias) {
        ps.add(new Param(path + ".weight", out * in, false));
        if (bias) {
            ps.add(new Param(path + ".bias", out, false));
        }
    }

    private static void lora(List<Param> ps, String path, long out, long in, int r, boolean active) {
        ps.add(new Param(path + ".lora_A.weight", r * in, active));
        ps.add(new Param(path + ".lora_B.weight", out * r, active));
    }

    /**
     * A one-block decoder with every module registered: embedding, q/k/v/o {@code [D, D]}, mlp up {@code [H, D]} and
     * down {@code [D, H]} with biases, two LayerNorms (weight and bias, {@code 2·D} each) and a final norm, and an
     * {@code lm_head [V, D]}. LoRA on q and v at {@code rank}, a second adapter of rank {@code rank + 1}.
     */
    private static LoraModel block(int rank, boolean registerNorms) {
        LoraModel.Builder b = LoraModel.builder().embedding("model.embed_tokens", gaussian(DataType.FLOAT, 1, 0.1, V, D));
        long seed = 2;
        for (String n : List.of("q_proj", "k_proj", "v_proj", "o_proj")) {
            b.linear("model.layers.0.self_attn." + n, gaussian(DataType.FLOAT, seed++, 0.1, D, D), null);
        }
        b.linear("model.layers.0.mlp.up_proj", gaussian(DataType.FLOAT, seed++, 0.1, H, D), gaussian(DataType.FLOAT, seed++, 0.1, H));
        b.linear("model.layers.0.mlp.down_proj", gaussian(DataType.FLOAT, seed++, 0.1, D, H), gaussian(DataType.FLOAT, seed++, 0.1, D));
        if (registerNorms) {
            b.parametersOnly("model.layers.0.input_layernorm", 2L * D);
            b.parametersOnly("model.layers.0.post_attention_layernorm", 2L * D);
            b.parametersOnly("model.norm", 2L * D);
        }
        b.linear("lm_head", gaussian(DataType.FLOAT, seed, 0.1, V, D), null);
        LoraModel model = b.build();
        model.applyLora(LoraConfig.builder().rank(rank).build(), List.of("q_proj", "v_proj"));
        model.addAdapter("second", LoraConfig.builder().rank(rank + 1).build());
        return model;
    }

    /** PEFT's parameters of {@link #block}, with {@code active} the trained adapter. */
    private static List<Param> peftParams(int rank, boolean norms, String active) {
        List<Param> ps = new ArrayList<>();
        ps.add(new Param("model.embed_tokens.weight", (long) V * D, false));
        for (String n : List.of("q_proj", "k_proj", "v_proj", "o_proj")) {
            String p = "model.layers.0.self_attn." + n;
            linear(ps, p, D, D, false);
            if (n.equals("q_proj") || n.equals("v_proj")) {
                lora(ps, p, D, D, rank, active.equals("default"));
                lora(ps, p, D, D, rank + 1, active.equals("second"));
            }
        }
        linear(ps, "model.layers.0.mlp.up_proj", H, D, true);
        linear(ps, "model.layers.0.mlp.down_proj", D, H, true);
        if (norms) {
            for (String n : List.of("model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm", "model.norm")) {
                ps.add(new Param(n + ".weight", D, false));
                ps.add(new Param(n + ".bias", D, false));
            }
        }
        linear(ps, "lm_head", V, D, false);
        return ps;
    }

    @Property(tries = 20)
    void aFullyRegisteredModelReportsPeftsNumbers(@ForAll @IntRange(min = 1, max = 7) int rank) {
        LoraModel model = block(rank, true);
        List<Param> expected = peftParams(rank, true, "default");
        assertEquals(peftLine(expected), model.trainableParametersReport());
        assertEquals(expected.stream().mapToLong(Param::numel).sum(), model.totalParameterCount());
        assertEquals(expected.stream().filter(Param::requiresGrad).mapToLong(Param::numel).sum(),
                model.trainableParameterCount());
        model.setActiveAdapter("second");
        assertEquals(peftLine(peftParams(rank, true, "second")), model.trainableParametersReport());
    }

    @Test
    void unregisteredLayersAreLeftOutAndTheScopeSaysWhatWasCounted() {
        LoraModel full = block(4, true);
        LoraModel partial = block(4, false);
        assertEquals(peftLine(peftParams(4, false, "default")), partial.trainableParametersReport());
        assertNotEquals(full.trainableParametersReport(), partial.trainableParametersReport(),
                "leaving the norms out raises the percentage");
        assertEquals(full.trainableParameterCount(), partial.trainableParameterCount());
        assertEquals(6L * D, full.totalParameterCount() - partial.totalParameterCount(), "the three norms");

        String scope = full.parameterCountScope();
        assertTrue(scope.contains("7 linear") && scope.contains("1 embedding") && scope.contains("3 parameters-only"),
                scope);
        assertTrue(scope.contains("not registered") && scope.contains("not counted"), scope);
        assertTrue(partial.parameterCountScope().contains("0 parameters-only"), partial.parameterCountScope());
        assertEquals(List.of("model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm", "model.norm"),
                List.copyOf(full.parametersOnlyModules().keySet()));
        assertTrue(!full.modulePaths().contains("model.norm"), "a parameters-only module is not a module path");
    }

    @Test
    void modulesToSaveCountTheFrozenOriginalAndTheTrainableCopyAsPeftDoes() {
        LoraModel model = block(2, true);
        INDArray head = gaussian(DataType.FLOAT, 50, 0.1, V, D);
        model.setModuleToSave("lm_head", head, null);
        List<Param> expected = peftParams(2, true, "default");
        expected.add(new Param("lm_head.modules_to_save.default.weight", (long) V * D, true));
        assertEquals(peftLine(expected), model.trainableParametersReport());
    }

    @Test
    void parametersOnlyModulesAreCheckedAndCannotBeTargeted() {
        IllegalArgumentException neg = assertThrows(IllegalArgumentException.class,
                () -> LoraModel.builder().parametersOnly("norm", -1));
        assertTrue(neg.getMessage().contains("expected >= 0, got -1"), neg.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> LoraModel.builder().parametersOnly("norm", 4).parametersOnly("norm", 4));
        IllegalArgumentException only = assertThrows(IllegalArgumentException.class,
                () -> LoraModel.builder().parametersOnly("norm", 4).build());
        assertTrue(only.getMessage().contains("norm"), only.getMessage());
        LoraModel model = LoraModel.builder().linear("fc", gaussian(DataType.FLOAT, 1, 0.1, 4, 4), null)
                .parametersOnly("norm", 8).build();
        IllegalArgumentException target = assertThrows(IllegalArgumentException.class,
                () -> model.applyLora(LoraConfig.defaults(), List.of("norm")));
        assertTrue(target.getMessage().contains("matched no module"), target.getMessage());
        assertEquals(24L, model.totalParameterCount(), "16 + 8");
    }
}
