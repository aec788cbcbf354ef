package io.github.lora4j;

import static io.github.lora4j.TorchOracleTest.matrix;
import static io.github.lora4j.TorchOracleTest.vector;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * DoRA against PyTorch float64 autograd of PEFT's formula ({@code oracle/torch-dora-cases.json}, written by
 * {@code oracle/torch_dora_cases.py} beside it): forward in training and eval, {@code dL/dA}, {@code dL/dB},
 * {@code dL/dm}, {@code dL/dx}, the merged weight and output, and the initial magnitude; with and without bias,
 * rsLoRA, {@code fan_in_fan_out}, dropout 0 and, with lora4j's own mask reproduced in the script, dropout > 0 in
 * training. Agreement: 1e-12 relative, element by element (relative to the element, or to 1e-3 of the array's
 * largest element where the element itself is smaller: a sum that cancels to nearly 0 carries the rounding of its
 * terms, not of its result).
 */
class DoraOracleTest {

    static final double TOLERANCE = 1e-12;

    /** Worst error per quantity over all cases, printed once for the record. */
    private static final Map<String, Double> WORST = new TreeMap<>();

    @TestFactory
    Stream<DynamicTest> matchesPeftFormulaUnderPyTorchAutograd() throws IOException {
        JsonNode root;
        try (InputStream in = DoraOracleTest.class.getResourceAsStream("/oracle/torch-dora-cases.json")) {
            root = new ObjectMapper().readTree(in);
        }
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : root.get("cases")) {
            String name = "n=" + c.get("n") + " in=" + c.get("in") + " out=" + c.get("out") + " r=" + c.get("rank")
                    + " rslora=" + c.get("rslora") + " fanInFanOut=" + c.get("fanInFanOut") + " bias="
                    + !c.get("b").isNull() + " dropout=" + c.get("dropout");
            tests.add(DynamicTest.dynamicTest(name, () -> check(c)));
        }
        assertEquals(8, tests.size(), "number of reference cases");
        return tests.stream();
    }

    @AfterAll
    static void report() {
        System.out.println("DoRA oracle, max relative error per quantity over all cases: " + WORST);
    }

    private static void check(JsonNode c) {
        boolean inOut = c.get("fanInFanOut").asBoolean();
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        LoraConfig cfg = LoraConfig.builder().rank(c.get("rank").asInt()).alpha(c.get("alpha").asDouble())
                .rsLora(c.get("rslora").asBoolean()).dropout(c.get("dropout").asDouble()).seed(c.get("seed").asLong())
                .useDora(true).build();
        assertEquals(c.get("scaling").asDouble(), cfg.scaling(), 1e-15, "scaling");
        INDArray w = matrix(c.get("W"));
        INDArray wBefore = w.dup();
        INDArray b = c.get("b").isNull() ? null : vector(c.get("b"));
        LoraLinear layer = LoraLinear.wrap(w, b, cfg, layout);
        assertClose("magnitudeInit", vector(c.get("magnitudeInit")), layer.adapter("default").magnitude());

        layer.setAdapterWeights("default", matrix(c.get("A")), matrix(c.get("B")), vector(c.get("magnitude")));
        INDArray x = matrix(c.get("x"));
        layer.train();
        assertClose("y", matrix(c.get("y")), layer.forward(x));
        INDArray dx = layer.backward(matrix(c.get("gradOutput")));
        LoraAdapter a = layer.adapter("default");
        assertClose("gradInput", matrix(c.get("gradInput")), dx);
        assertClose("gradA", matrix(c.get("gradA")), a.gradA());
        assertClose("gradB", matrix(c.get("gradB")), a.gradB());
        assertClose("gradMagnitude", vector(c.get("gradMagnitude")), a.gradMagnitude());
        assertClose("weightNorm", vector(c.get("weightNorm")),
                org.nd4j.linalg.factory.Nd4j.createFromArray(a.dora().norms(w, layout, a)));

        layer.eval();
        assertClose("yEval", matrix(c.get("yEval")), layer.forward(x));
        assertClose("mergedWeight", matrix(c.get("mergedWeight")), layer.mergedWeight());
        layer.merge();
        assertClose("merged W", matrix(c.get("mergedWeight")), layer.weight());
        assertClose("yMerged", matrix(c.get("yMerged")), layer.forward(x));
        layer.unmerge();
        assertArrayEquals(wBefore.data().asDouble(), w.data().asDouble(), "unmerge restores W bitwise");
    }

    private static void assertClose(String what, INDArray expected, INDArray actual) {
        assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
        double scale = expected.castTo(DataType.DOUBLE).amaxNumber().doubleValue();
        double err = TestData.maxRelativeError(actual, expected, 1e-3 * scale);
        WORST.merge(what, err, Math::max);
        assertTrue(err <= TOLERANCE, what + ": max relative error " + err + " > " + TOLERANCE);
    }
}
