package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Agreement with PyTorch float64 autograd on the reference cases in {@code oracle/torch-lora-cases.json}
 * (copied from the project's shared oracle; computed independently of lora4j).
 */
class TorchOracleTest {

    private static final double TOLERANCE = 1e-10;

    @TestFactory
    Stream<DynamicTest> matchesPyTorchAutograd() throws IOException {
        JsonNode root;
        try (InputStream in = TorchOracleTest.class.getResourceAsStream("/oracle/torch-lora-cases.json")) {
            root = new ObjectMapper().readTree(in);
        }
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : root.get("cases")) {
            String name = "n=" + c.get("n") + " in=" + c.get("in") + " out=" + c.get("out") + " r=" + c.get("rank")
                    + " rslora=" + c.get("rslora") + " bias=" + !c.get("b").isNull();
            tests.add(DynamicTest.dynamicTest(name, () -> check(c)));
        }
        assertEquals(4, tests.size(), "number of reference cases");
        return tests.stream();
    }

    private static void check(JsonNode c) {
        int rank = c.get("rank").asInt();
        LoraConfig cfg = LoraConfig.builder().rank(rank).alpha(c.get("alpha").asDouble()).rsLora(c.get("rslora").asBoolean()).build();
        assertEquals(c.get("scaling").asDouble(), cfg.scaling(), 1e-15, "scaling");
        INDArray w = matrix(c.get("W"));
        INDArray b = c.get("b").isNull() ? null : vector(c.get("b"));
        LoraLinear layer = LoraLinear.wrap(w, b, cfg);
        layer.setAdapterWeights("default", matrix(c.get("A")), matrix(c.get("B")));
        layer.train();

        INDArray y = layer.forward(matrix(c.get("x")));
        assertClose("y", matrix(c.get("y")), y);
        INDArray dx = layer.backward(matrix(c.get("gradOutput")));
        assertClose("gradInput", matrix(c.get("gradInput")), dx);
        assertClose("gradA", matrix(c.get("gradA")), layer.adapter("default").gradA());
        assertClose("gradB", matrix(c.get("gradB")), layer.adapter("default").gradB());
        assertClose("mergedWeight", matrix(c.get("mergedWeight")), layer.mergedWeight());

        layer.eval().merge();
        assertClose("yMerged", matrix(c.get("yMerged")), layer.forward(matrix(c.get("x"))));
        assertClose("merged W", matrix(c.get("mergedWeight")), layer.weight());
    }

    private static void assertClose(String what, INDArray expected, INDArray actual) {
        double err = TestData.maxRelativeError(actual, expected, 1.0);
        assertTrue(err <= TOLERANCE, what + ": max relative error " + err + " > " + TOLERANCE);
    }

    static INDArray matrix(JsonNode rows) {
        double[][] m = new double[rows.size()][];
        for (int i = 0; i < m.length; i++) {
            JsonNode row = rows.get(i);
            m[i] = new double[row.size()];
            for (int j = 0; j < m[i].length; j++) {
                m[i][j] = row.get(j).asDouble();
            }
        }
        return Nd4j.createFromArray(m).castTo(DataType.DOUBLE);
    }

    static INDArray vector(JsonNode values) {
        double[] v = new double[values.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = values.get(i).asDouble();
        }
        return Nd4j.createFromArray(v);
    }
}
