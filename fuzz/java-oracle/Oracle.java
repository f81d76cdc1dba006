// A differential oracle: de-aggregates KPL records with protobuf-java and the
// JDK, applying the rules the Java KCL's AggregatorUtil applies, so that
// rsmld's decoder can be compared with the real Java runtime behaviour
// (tests/it/kpl_java_oracle.rs). Written for rsmld; see README.md.
//
// Input: one base64 Kinesis record per line. Output, one line per input:
//   P                                   not an aggregate
//   A <status> <n> <pk>,<ehk>,<data>... an aggregate; status ok|partial|dropped;
//                                       each field base64 (UTF-8 of the Java
//                                       string for keys), ehk "-" when absent

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;

import com.google.protobuf.InvalidProtocolBufferException;
import rsmld.kpl.KplAggregation;

public final class Oracle {
    private static final byte[] MAGIC = {(byte) 0xF3, (byte) 0x89, (byte) 0x9A, (byte) 0xC2};
    private static final BigInteger MAX_HASH_KEY = BigInteger.ONE.shiftLeft(128).subtract(BigInteger.ONE);

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(System.out, false, "US-ASCII");
        String line;
        while ((line = in.readLine()) != null) {
            out.println(decide(Base64.getDecoder().decode(line.trim())));
        }
        out.flush();
    }

    private static String b64(String text) {
        return Base64.getEncoder().encodeToString(text.getBytes(StandardCharsets.UTF_8));
    }

    private static String decide(byte[] record) throws Exception {
        if (record.length < 4 || !Arrays.equals(Arrays.copyOf(record, 4), MAGIC) || record.length - 4 <= 16) {
            return "P";
        }
        byte[] body = Arrays.copyOfRange(record, 4, record.length - 16);
        byte[] digest = Arrays.copyOfRange(record, record.length - 16, record.length);
        if (!Arrays.equals(MessageDigest.getInstance("MD5").digest(body), digest)) {
            return "P";
        }
        KplAggregation.AggregatedRecord aggregate;
        try {
            aggregate = KplAggregation.AggregatedRecord.parseFrom(body);
        } catch (InvalidProtocolBufferException e) {
            return "P";
        }
        List<String> pks = aggregate.getPartitionKeyTableList();
        List<String> ehks = aggregate.getExplicitHashKeyTableList();
        List<String> emitted = new ArrayList<>();
        String status = "ok";
        try {
            for (KplAggregation.Record r : aggregate.getRecordsList()) {
                String pk = pks.get((int) r.getPartitionKeyIndex());
                String ehk = null;
                if (r.hasExplicitHashKeyIndex()) {
                    ehk = ehks.get((int) r.getExplicitHashKeyIndex());
                }
                BigInteger hash = ehk != null
                        ? new BigInteger(ehk)
                        : new BigInteger(1, MessageDigest.getInstance("MD5").digest(pk.getBytes(StandardCharsets.UTF_8)));
                if (hash.signum() < 0 || hash.compareTo(MAX_HASH_KEY) > 0) {
                    emitted.clear();
                    status = "dropped";
                    break;
                }
                emitted.add(b64(pk) + "," + (ehk == null ? "-" : b64(ehk)) + ","
                        + Base64.getEncoder().encodeToString(r.getData().toByteArray()));
            }
        } catch (RuntimeException e) {
            status = "partial";
        }
        StringBuilder line = new StringBuilder("A ").append(status).append(' ').append(emitted.size());
        for (String e : emitted) {
            line.append(' ').append(e);
        }
        return line.toString();
    }

}
